package commands

func verifyExitCases() []struct {
	name string
	err  error
	want int
} {
	return nil
}
