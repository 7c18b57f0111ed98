// Package commands is the imageio command line: one file per command (info,
// measure, checksum, upload, download), the root App in app.go, the progress
// display in progress.go (the only user of the pb/v3 bar) and the mapping of
// errors to exit statuses in exit.go.
//
// Commands only bind flags into an options struct and call runXxx, which
// calls the UI-free packages (qemuimg, nbdlocal, transfer, engine). Nothing
// here exits the process: errors go back to main, which prints them once
// with Report.
//
// stdout carries only the result asked for (info and measure output, the
// checksum, --json objects); progress, warnings and errors go to stderr.
package commands
