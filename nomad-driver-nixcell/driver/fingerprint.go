package driver

import "github.com/nixcell/nixcell/internal/doctor"

// checkHost runs `nixcell doctor`'s host checks and returns the problems
// found, each with its fix: the same words doctor prints.
func checkHost() []string {
	var problems []string
	for _, r := range doctor.Run(doctor.Host()) {
		if r.Status == doctor.Fail {
			p := r.Check + ": " + r.Found
			if r.Fix != "" {
				p += " (fix: " + r.Fix + ")"
			}
			problems = append(problems, p)
		}
	}
	return problems
}
