package main

import (
	"os"
	"path/filepath"
)

// credentialsEnv is set by systemd for a unit with LoadCredential= or
// SetCredential=: the folder (on a private, unswappable mount) holding the
// unit's credentials.
const credentialsEnv = "CREDENTIALS_DIRECTORY"

// keyFilePath resolves a key file argument. Under a unit that has
// credentials, a relative path names a credential: `--new-key-file
// new.key` with LoadCredential=new.key:/root/keys/sdb.key reads
// $CREDENTIALS_DIRECTORY/new.key. A unit's working directory is / unless
// set, so a relative path there could hardly mean anything else; outside
// such a unit nothing changes. A name that would leave the folder ("../x")
// is refused rather than resolved somewhere unexpected.
func keyFilePath(flag, path string) (string, error) {
	dir := os.Getenv(credentialsEnv)
	if dir == "" || filepath.IsAbs(path) {
		return path, nil
	}
	if !filepath.IsLocal(path) {
		return "", usageErr("--%s %s: with $%s set, a relative key file names a credential, and this is not a credential name", flag, path, credentialsEnv)
	}
	return filepath.Join(dir, path), nil
}
