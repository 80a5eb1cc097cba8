//go:build purego || !amd64

package sectorcipher

// Without assembly there is nothing to choose from: New uses the pure-Go
// engines in xts.go and cbc.go.
var (
	xtsImpls []xtsImpl
	cbcImpls []cbcImpl
)

const haveAESNI = false
