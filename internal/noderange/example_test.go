package noderange_test

import (
	"errors"
	"fmt"

	"github.com/drover-project/drover/internal/noderange"
)

func ExampleExpand() {
	names, err := noderange.Expand("n[1-3,7],r[1-2]n[01-02],rack-1-rack-2,-n2")
	fmt.Println(names, err)
	// Output: [n1 n3 n7 r1n01 r1n02 r2n01 r2n02 rack-1 rack-2] <nil>
}

func ExampleResolve() {
	u := noderange.MapUniverse{
		"": {{Name: "login"}},
		"east": {
			{Name: "n1"}, {Name: "n2"}, {Name: "n3"},
			{Name: "c1", Labels: map[string]string{"role": "compute"}},
		},
		"west": {{Name: "n1"}, {Name: "n2"}},
	}
	for _, expr := range []string{
		"east,west%n[1-2]",
		"all%all,-east%n[2-3]",
		"east%@role=compute,login",
		"east%n[1-5],west%n9,north%n1",
	} {
		set, err := noderange.Resolve(expr, u)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(set.Fold())
	}
	// Output:
	// (east,west)%n[1-2]
	// east%c1,east%n1,west%n[1-2],login
	// east%c1,login
	// noderange: unknown site north; unknown nodes east%n[4-5], west%n9
}

func ExampleNodeSet_Fold() {
	s := noderange.NewNodeSet()
	for i := 1; i <= 10; i++ {
		s.Add(noderange.Node{Site: "east", Name: fmt.Sprintf("n%02d", i)})
	}
	s.Add(noderange.Node{Site: "west", Name: "n1"}, noderange.Node{Name: "login"})
	fmt.Println(s.Fold())
	// Output: east%n[01-10],west%n1,login
}

func ExampleUnknownError() {
	u := noderange.MapUniverse{"east": {{Name: "n1"}}}
	_, err := noderange.Resolve("east%n[1-3]", u)
	var unknown *noderange.UnknownError
	if errors.As(err, &unknown) {
		fmt.Println(unknown.Nodes)
	}
	// Output: [east%n2 east%n3]
}
