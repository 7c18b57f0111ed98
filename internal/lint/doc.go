// Package lint holds repository-wide checks run as tests: every package has
// a doc comment, and packages import only in the allowed directions (see
// docs/architecture.md).
package lint
