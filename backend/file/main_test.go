package file_test

import (
	"testing"

	"github.com/imageio/imageio/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }
