package luks

import (
	"encoding/hex"
	"strings"
	"testing"
)

// Vectors of the Whirlpool specification, and one made with OpenSSL: the
// library behind the keyslot hash old LUKS1 volumes use.
func TestWhirlpoolVectors(t *testing.T) {
	for in, want := range map[string]string{
		"": "19FA61D75522A4669B44E39C1D2E1726C530232130D407F89AFEE0964997F7A73E83BE698B288FEBCF88E3E03C4F0757EA8964E59B63D93708B138CC42A66EB3",
		// 1000 x "a", spanning several blocks (checked with OpenSSL's
		// legacy provider).
		strings.Repeat("a", 1000): "FE24B173807796FDAC15EBCAF5769F661695601FFEB64490EC0EECD30BD5B2C3773B36D4EDAF3175378B8DF114E9496C833EF13606E7AB3D455681E98ECC818F",
		"abc":                     "4E2448A4C6F486BB16B6562C73B4020BF3043E3A731BCE721AE1B303D97E6D4C7181EEBDB6C57E277D0E34957114CBD6C797FC9D95D8B582D225292076D4EEF5",
	} {
		h := hashes["whirlpool"]()
		// Odd write sizes exercise the buffering across blocks.
		for b := []byte(in); len(b) > 0; {
			n := min(len(b), 7)
			h.Write(b[:n])
			b = b[n:]
		}
		if got := strings.ToUpper(hex.EncodeToString(h.Sum(nil))); got != want {
			t.Errorf("whirlpool(%q) = %s, want %s", in, got, want)
		}
	}
}
