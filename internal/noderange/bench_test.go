package noderange

import (
	"fmt"
	"testing"
)

// benchSet is 10,000 nodes over 4 sites: racks r1..r50 of 50 nodes each per
// site, with a few holes so that folding has real work to do.
func benchSet() (*NodeSet, MapUniverse) {
	s := NewNodeSet()
	u := MapUniverse{}
	for _, site := range []string{"east", "west", "north", "south"} {
		for r := 1; r <= 50; r++ {
			for n := 1; n <= 50; n++ {
				name := fmt.Sprintf("r%dn%03d", r, n)
				u[site] = append(u[site], NodeInfo{Name: name})
				if (r*7+n*13)%97 != 0 {
					s.Add(Node{site, name})
				}
			}
		}
	}
	return s, u
}

func BenchmarkFold10k(b *testing.B) {
	s, _ := benchSet()
	b.ReportMetric(float64(s.Len()), "nodes")
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Fold()
	}
}

func BenchmarkEvalFolded10k(b *testing.B) {
	s, u := benchSet()
	folded := s.Fold()
	b.ReportAllocs()
	for b.Loop() {
		got, err := Resolve(folded, u)
		if err != nil || got.Len() != s.Len() {
			b.Fatal(err)
		}
	}
}

func BenchmarkEvalAll10k(b *testing.B) {
	_, u := benchSet()
	b.ReportAllocs()
	for b.Loop() {
		got, err := Resolve("all%r[1-50]n[001-050],-all%r[1-5]n[001-050]", u)
		if err != nil || got.Len() != 9000 {
			b.Fatal(got.Len(), err)
		}
	}
}

func BenchmarkExpand10k(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		names, err := Expand("r[1-100]n[001-100]")
		if err != nil || len(names) != 10000 {
			b.Fatal(err)
		}
	}
}

func BenchmarkNodes10k(b *testing.B) {
	s, _ := benchSet()
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Nodes()
	}
}
