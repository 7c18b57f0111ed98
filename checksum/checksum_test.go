package checksum_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/backend/mem"
	"github.com/imageio/imageio/checksum"
	"golang.org/x/crypto/blake2b"
	"golang.org/x/crypto/blake2s"
)

const MiB = 1 << 20

// independent is the block checksum written plainly: hash each block, then
// hash the digests.
func independent(t *testing.T, data []byte, algorithm string, blockSize int) string {
	t.Helper()
	newHash := map[string]func() hash.Hash{
		"blake2b": func() hash.Hash { h, _ := blake2b.New256(nil); return h },
		"blake2s": func() hash.Hash { h, _ := blake2s.New256(nil); return h },
		"md5":     md5.New, "sha1": sha1.New, "sha224": sha256.New224,
		"sha256": sha256.New, "sha384": sha512.New384, "sha512": sha512.New,
		"sha512_224": sha512.New512_224, "sha512_256": sha512.New512_256,
		"sha3_224": func() hash.Hash { return sha3.New224() },
		"sha3_256": func() hash.Hash { return sha3.New256() },
		"sha3_384": func() hash.Hash { return sha3.New384() },
		"sha3_512": func() hash.Hash { return sha3.New512() },
	}[algorithm]
	if newHash == nil {
		t.Fatalf("no independent hash for %q", algorithm)
	}
	outer := newHash()
	for off := 0; off < len(data); off += blockSize {
		h := newHash()
		h.Write(data[off:min(off+blockSize, len(data))])
		outer.Write(h.Sum(nil))
	}
	return hex.EncodeToString(outer.Sum(nil))
}

// vectorData is the content whose checksums were computed with Python's
// hashlib (the reference daemon's hash library) and pinned below.
func vectorData() []byte {
	size := 5*MiB + 12345
	b := make([]byte, size)
	for i := range MiB {
		b[i] = byte((i*7 + 3) % 251)
	}
	for i := 3 * MiB; i < 3*MiB+100; i++ {
		b[i] = 0xab
	}
	b[size-1] = 1
	return b
}

var vectors = []struct {
	alg  string
	bs   int
	want string
}{
	{"blake2b", 4 * MiB, "9a68dbc1932f3f1aa3717255ca37e78424ecebf746ea43ba94886a34bb327095"},
	{"blake2b", MiB, "ca48b64348e970d809e55eeda872710834e2d1c33814ed5c40574db1c4f1f6c6"},
	{"sha256", 2 * MiB, "d2730b2ee05adab0313e42717bc5744806909662f164a55090e2a434148e97e3"},
	{"blake2s", MiB, "a1294cf5e81a957b7fa0c9a4a6ac79aa97b9a98bef95d90082603e28286ab83b"},
	{"md5", 4 * MiB, "c62ac0d5aebd60ad2615a978a38f4d3b"},
	{"sha1", MiB, "9c29c64f717270eba180cd412f8bd98bddc4a87d"},
	{"sha512", MiB, "d01748fd7a88efe90fbeb88720aa562656a3ff1533ee8f63ae6ce67214bb950e3b252c6f8f2a8123b97247d0eeee8fb953334b9fb20ee2d39e623e02c2eac6ce"},
	{"sha3_256", MiB, "304d25f98d6c586fb9b49e3a97cc4069e357cfc4d580525f630decbc653e1f9d"},
}

func TestKnownVectors(t *testing.T) {
	data := vectorData()
	for _, v := range vectors {
		t.Run(fmt.Sprintf("%s/%d", v.alg, v.bs), func(t *testing.T) {
			if got := independent(t, data, v.alg, v.bs); got != v.want {
				t.Errorf("independent: got %s, want %s", got, v.want)
			}
			got, err := checksum.Compute(context.Background(), mem.NewWithData(data), v.alg, v.bs)
			if err != nil {
				t.Fatal(err)
			}
			want := checksum.Result{Algorithm: v.alg, BlockSize: v.bs, Checksum: v.want}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Compute (-want +got):\n%s", diff)
			}
			sum, err := checksum.Sum(bytes.NewReader(data), v.alg, v.bs)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, sum); diff != "" {
				t.Errorf("Sum (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEmptyImage(t *testing.T) {
	// blake2b(digest_size=32) of nothing, from Python's hashlib.
	const want = "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"
	got, err := checksum.Compute(context.Background(), mem.New(0), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Checksum != want || got.Algorithm != checksum.DefaultAlgorithm || got.BlockSize != checksum.DefaultBlockSize {
		t.Errorf("got %+v, want blake2b/4 MiB checksum %s", got, want)
	}
}

type run struct {
	off, n int64
	kind   string // "data", "zero" (allocated), "hole", "zerodata" (zero bytes written as data)
}

func buildImage(t *testing.T, size int64, runs []run, caps backend.Caps) (*mem.Backend, []byte) {
	t.Helper()
	ctx := context.Background()
	b := mem.NewWithCaps(size, caps)
	want := make([]byte, size)
	rng := rand.New(rand.NewPCG(uint64(size), 1))
	for _, r := range runs {
		p := make([]byte, r.n)
		switch r.kind {
		case "data":
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			fallthrough
		case "zerodata":
			if err := b.WriteAt(ctx, p, r.off); err != nil {
				t.Fatal(err)
			}
			copy(want[r.off:], p)
		case "zero", "hole":
			if err := b.Zero(ctx, r.off, r.n, r.kind == "hole"); err != nil {
				t.Fatal(err)
			}
			clear(want[r.off : r.off+r.n])
		}
	}
	return b, want
}

func TestComputeMatchesIndependent(t *testing.T) {
	noExtents := mem.DefaultCaps()
	noExtents.Extents = nil
	oneReader := mem.DefaultCaps()
	oneReader.MaxReaders = 1
	images := []struct {
		name string
		size int64
		runs []run
	}{
		{"empty 4 MiB", 4 * MiB, nil},
		{"all data 5 MiB", 5 * MiB, []run{{0, 5 * MiB, "data"}}},
		{"mixed unaligned size", 9*MiB + 12345, []run{
			{0, MiB, "data"}, {MiB, MiB, "zero"}, {2*MiB + 4096, 300, "data"},
			{3 * MiB, 2 * MiB, "zerodata"}, {5*MiB - 1, 2, "data"}, {6 * MiB, MiB, "hole"},
			{9 * MiB, 12345, "data"}, {9*MiB + 100, 100, "zero"},
		}},
		{"data only in short last block", 4*MiB + 513, []run{{4 * MiB, 1, "data"}}},
		{"data then punched", 6 * MiB, []run{{0, 6 * MiB, "data"}, {MiB, 3 * MiB, "hole"}}},
	}
	caps := []struct {
		name string
		caps backend.Caps
	}{{"zero extents", mem.DefaultCaps()}, {"no extents", noExtents}, {"one reader", oneReader}}
	params := []struct {
		alg string
		bs  int
	}{{"blake2b", 4 * MiB}, {"blake2b", MiB}, {"sha256", 2 * MiB}, {"sha1", MiB + 4096}}
	for _, img := range images {
		for _, c := range caps {
			b, data := buildImage(t, img.size, img.runs, c.caps)
			for _, p := range params {
				t.Run(fmt.Sprintf("%s/%s/%s/%d", img.name, c.name, p.alg, p.bs), func(t *testing.T) {
					want := independent(t, data, p.alg, p.bs)
					var done atomic.Int64
					got, err := checksum.ComputeWithOptions(context.Background(), b, checksum.Options{
						Algorithm: p.alg, BlockSize: p.bs, Progress: func(n int64) { done.Add(n) },
					})
					if err != nil {
						t.Fatal(err)
					}
					if got.Checksum != want {
						t.Errorf("Compute: got %s, want %s", got.Checksum, want)
					}
					if done.Load() != img.size {
						t.Errorf("progress: got %d bytes, want %d", done.Load(), img.size)
					}
					sum, err := checksum.Sum(iotest.HalfReader(bytes.NewReader(data)), p.alg, p.bs)
					if err != nil {
						t.Fatal(err)
					}
					if sum.Checksum != want {
						t.Errorf("Sum: got %s, want %s", sum.Checksum, want)
					}
				})
			}
		}
	}
}

func TestComputeSkipsZeroExtents(t *testing.T) {
	b, _ := buildImage(t, 32*MiB, []run{{4 * MiB, 100, "data"}, {8 * MiB, MiB, "zero"}}, mem.DefaultCaps())
	if _, err := checksum.Compute(context.Background(), b, "", 0); err != nil {
		t.Fatal(err)
	}
	if got := b.Stats().ReadBytes; got != 64<<10 {
		t.Errorf("bytes read: got %d, want only the 64 KiB data chunk", got)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		alg  string
		bs   int
		want string // "" = valid
	}{
		{"default", "blake2b", 4 * MiB, ""},
		{"min", "sha256", MiB, ""},
		{"max", "md5", 16 * MiB, ""},
		{"small", "blake2b", MiB - 4096, "Block size out of allowed range: 1048576-16777216"},
		{"large", "blake2b", 16*MiB + 4096, "Block size out of allowed range: 1048576-16777216"},
		{"unaligned", "blake2b", MiB + 512, "Block size is not aligned to 4096"},
		{"unknown algorithm", "crc32", 4 * MiB, "Unsupported value 'crc32' for 'algorithm', expecting one of ['blake2b', "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checksum.Validate(tc.alg, tc.bs)
			if tc.want == "" {
				if err != nil {
					t.Errorf("got %v, want nil", err)
				}
				return
			}
			if err == nil || !bytes.HasPrefix([]byte(err.Error()), []byte(tc.want)) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
			if !errors.Is(err, checksum.ErrInvalid) {
				t.Errorf("got %v, want ErrInvalid", err)
			}
			if _, err := checksum.Compute(context.Background(), mem.New(MiB), tc.alg, tc.bs); !errors.Is(err, checksum.ErrInvalid) {
				t.Errorf("Compute: got %v, want ErrInvalid", err)
			}
		})
	}
}

func TestAlgorithms(t *testing.T) {
	got := checksum.Algorithms()
	for _, want := range []string{"blake2b", "blake2s", "md5", "sha1", "sha224", "sha256", "sha384", "sha512"} {
		found := false
		for _, a := range got {
			found = found || a == want
		}
		if !found {
			t.Errorf("Algorithms() = %v lacks %q", got, want)
		}
	}
	for i := 1; i < len(got); i++ {
		if got[i-1] >= got[i] {
			t.Errorf("Algorithms() not sorted: %v", got)
		}
	}
}

func TestCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := mem.NewWithData(bytes.Repeat([]byte{1}, 8*MiB))
	_, err := checksum.Compute(ctx, b, "", 0)
	if !errors.Is(err, context.Canceled) && !errors.Is(err, backend.ErrCanceled) {
		t.Errorf("got %v, want a canceled error", err)
	}
}

func TestIsZero(t *testing.T) {
	p := make([]byte, 1<<16+3)
	if !checksum.IsZero(p) || !checksum.IsZero(nil) {
		t.Error("zeros: got false")
	}
	for _, i := range []int{0, 1, 100, len(p) / 2, len(p) - 2, len(p) - 1} {
		p[i] = 1
		if checksum.IsZero(p) {
			t.Errorf("byte %d set: got true", i)
		}
		p[i] = 0
	}
}

func BenchmarkCompute(b *testing.B) {
	const size = 256 * MiB
	data := make([]byte, size)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(data)
	img := mem.NewWithData(data)
	ctx := context.Background()
	b.SetBytes(size)
	for b.Loop() {
		if _, err := checksum.Compute(ctx, img, "blake2b", checksum.DefaultBlockSize); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkComputeSparse(b *testing.B) {
	const size = 32 << 30
	img := mem.New(size)
	ctx := context.Background()
	b.SetBytes(size)
	for b.Loop() {
		if _, err := checksum.Compute(ctx, img, "blake2b", checksum.DefaultBlockSize); err != nil {
			b.Fatal(err)
		}
	}
}
