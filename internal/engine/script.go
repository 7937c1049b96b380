package engine

import (
	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/render"
)

func renderScript(in *render.Input, task *api.Task) (string, error) {
	return render.Render(in, "task "+task.Name, task.Script)
}
