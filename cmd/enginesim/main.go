// Command enginesim runs an oVirt engine simulator backed by real imageiod
// daemons, for testing imageio and scripts that upload and download disks
// through the engine API. See man/enginesim.1 and docs/engine.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/imageio/imageio/enginesim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "enginesim: %v\n", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage error")

const usage = `Usage: enginesim --storage DIR [options]

Runs an oVirt engine REST API simulator (SSO, storage domains, disks, image
transfers) backed by real imageiod daemons, until SIGINT or SIGTERM.
Prints the engine URL, CA file and credentials on stdout.

Options:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("enginesim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var (
		cfg          enginesim.Config
		passwordFile string
		domains      string
		debug        bool
		noProxy      bool
	)
	fs.StringVar(&cfg.StorageDir, "storage", "", "directory holding the disk files (required)")
	fs.StringVar(&cfg.StateDir, "state-dir", "", "directory for certificates, daemon configs and logs (default: a temporary directory)")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8443", "engine HTTPS address")
	fs.StringVar(&cfg.Imageiod, "imageiod", "", "imageiod binary (default: next to enginesim, then $PATH)")
	fs.IntVar(&cfg.HostPort, "host-port", 0, "host daemon HTTPS port (default: a free port)")
	fs.IntVar(&cfg.ProxyPort, "proxy-port", 0, "proxy daemon HTTPS port (default: a free port)")
	fs.BoolVar(&noProxy, "no-proxy", false, "run no proxy daemon (transfers have no proxy_url)")
	fs.StringVar(&cfg.Username, "username", enginesim.DefaultUsername, "user accepted by SSO")
	fs.StringVar(&passwordFile, "password-file", "", "file holding the password (default: generate one)")
	fs.StringVar(&domains, "storage-domains", "data1", "comma-separated storage domains, NAME or NAME:TYPE (nfs, iscsi, fcp)")
	fs.DurationVar(&cfg.DiskDelay, "disk-delay", 200*time.Millisecond, "how long a new disk stays locked")
	fs.DurationVar(&cfg.InitDelay, "init-delay", 300*time.Millisecond, "how long a transfer stays initializing")
	fs.DurationVar(&cfg.FinalizeDelay, "finalize-delay", 300*time.Millisecond, "how long finalizing takes")
	fs.DurationVar(&cfg.Retention, "retention", 30*time.Second, "how long finished transfers are kept")
	fs.DurationVar(&cfg.Faults.SlowInit, "slow-init", 0, "fault: extra time in initializing")
	fs.BoolVar(&cfg.Faults.PausedSystem, "paused-system", false, "fault: transfers go from initializing to paused_system")
	fs.BoolVar(&cfg.Faults.FinalizeFailure, "finalize-failure", false, "fault: finalizing an upload fails (finished_failure, disk illegal)")
	fs.BoolVar(&cfg.Faults.DeadTransferURL, "dead-transfer-url", false, "fault: transfer_url points at a closed port (proxy_url works)")
	fs.DurationVar(&cfg.Faults.TokenLifetime, "token-lifetime", 0, "fault: SSO tokens expire after this long (0: never)")
	fs.BoolVar(&cfg.Faults.OldEngine, "old-engine", false, "fault: remove finished transfers at once (404 after finalize)")
	fs.BoolVar(&debug, "debug", false, "log requests and phase changes to stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "enginesim: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	if cfg.StorageDir == "" {
		fmt.Fprintln(stderr, "enginesim: --storage is required")
		fs.Usage()
		return errUsage
	}
	cfg.NoProxy = noProxy
	for _, d := range strings.Split(domains, ",") {
		if d = strings.TrimSpace(d); d != "" {
			cfg.StorageDomains = append(cfg.StorageDomains, d)
		}
	}
	if passwordFile != "" {
		b, err := os.ReadFile(passwordFile)
		if err != nil {
			return fmt.Errorf("reading password file: %w", err)
		}
		cfg.Password = strings.TrimRight(string(b), "\r\n")
		if cfg.Password == "" {
			return fmt.Errorf("password file %s is empty", passwordFile)
		}
	}
	if debug {
		cfg.Logf = func(format string, args ...any) {
			fmt.Fprintf(stderr, format+"\n", args...)
		}
	}
	sim, err := enginesim.Start(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "engine_url = %s\n", sim.URL())
	fmt.Fprintf(stdout, "cafile = %s\n", sim.CAFile())
	fmt.Fprintf(stdout, "username = %s\n", sim.Username)
	fmt.Fprintf(stdout, "password = %s\n", sim.Password)
	fmt.Fprintf(stdout, "storage_domains = %s\n", strings.Join(cfg.StorageDomains, ","))
	fmt.Fprintln(stderr, "enginesim: running; stop with Ctrl-C")
	<-ctx.Done()
	fmt.Fprintln(stderr, "enginesim: stopping")
	return sim.Close()
}
