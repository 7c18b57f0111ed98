package commands

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"time"

	"github.com/imageio/imageio/engine"
)

// cleanupTimeout bounds the cancel or finalize call made after the
// command's context was cancelled by a signal.
const cleanupTimeout = 5 * time.Minute

// cleanupContext returns a context for cleanup that outlives ctx (which may
// be cancelled already) but is bounded.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
}

// connectEngine resolves the connection flags and profile and logs in. It
// also sets the CA file and verification of req, which the imageio daemons
// share with the engine.
func connectEngine(ctx context.Context, o connOptions, req *copyRequest) (*engine.Client, error) {
	log := req.Log
	conn, err := resolveConn(o, resolver{
		Getenv: os.Getenv,
		Prompt: ttyPrompt(),
		Warn:   func(msg string) { req.Display.Printf("imageio: warning: %s", msg) },
	})
	if err != nil {
		return nil, err
	}
	req.CAFile, req.Insecure = conn.CAFile, conn.Insecure
	log.Debug("connecting to engine", "url", conn.URL, "user", conn.Username, "cafile", conn.CAFile, "insecure", conn.Insecure)
	c, err := engine.Connect(ctx, engine.Config{
		URL:      conn.URL,
		Username: conn.Username,
		Password: conn.Password,
		CAFile:   conn.CAFile,
		Insecure: conn.Insecure,
		Logf: func(format string, args ...any) {
			log.Debug(fmt.Sprintf(format, args...))
		},
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// newUUID returns a random (version 4) UUID, used as the id of a new disk
// so that it can be removed even when its creation was interrupted before
// the engine answered.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
