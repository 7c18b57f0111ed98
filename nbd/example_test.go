package nbd_test

import (
	"context"
	"fmt"
	"log"

	"github.com/imageio/imageio/nbd"
)

func ExampleDial() {
	ctx := context.Background()
	addr, err := nbd.ParseURL("nbd+unix:///?socket=/run/disk.sock")
	if err != nil {
		log.Fatal(err)
	}
	c, err := nbd.Dial(ctx, addr, nbd.Options{}) // base:allocation + qemu:allocation-depth
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	exts, err := c.Extents(ctx, 0, c.Size())
	if err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 4<<20)
	for _, e := range exts {
		if e.Zero {
			continue // reads as zeros; nothing to copy
		}
		for off := e.Start; off < e.End(); off += int64(len(buf)) {
			p := buf[:min(int64(len(buf)), e.End()-off)]
			if err := c.ReadAt(ctx, p, off); err != nil {
				log.Fatal(err)
			}
			fmt.Printf("%d bytes of data at %d\n", len(p), off)
		}
	}
}
