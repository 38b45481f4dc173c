// Package keyfiles writes the key files that outside tools read: minisign
// key pairs (the gateway's signing key, which Debian's `minisign -V`
// verifies against) and age X25519 identities (which `age -d -i` reads).
// Both the embedded default and `consilium keys init` use it, so their
// files are the same format.
package keyfiles

import (
	"crypto/rand"
	"fmt"
	"os"
	"time"

	"aead.dev/minisign"
	"filippo.io/age"
)

// WriteSigningKey generates a minisign key pair and writes the secret key
// unencrypted to privPath (0600) and the public key to pubPath, in
// minisign's own formats. Neither file may exist yet.
func WriteSigningKey(privPath, pubPath string) error {
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generating signing key: %w", err)
	}
	privText, err := priv.MarshalText()
	if err != nil {
		return fmt.Errorf("encoding signing key: %w", err)
	}
	pubText, err := pub.MarshalText()
	if err != nil {
		return fmt.Errorf("encoding signing key: %w", err)
	}
	if err := WriteNew(privPath, append(privText, '\n'), 0o600); err != nil {
		return err
	}
	return WriteNew(pubPath, append(pubText, '\n'), 0o644)
}

// WriteAgeIdentity generates an age X25519 identity and writes it to path
// (0600) in the format of age-keygen. It returns the public recipient.
func WriteAgeIdentity(path string) (string, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return "", fmt.Errorf("generating age identity: %w", err)
	}
	content := fmt.Sprintf("# created: %s\n# public key: %s\n%s\n",
		time.Now().UTC().Format(time.RFC3339), id.Recipient(), id)
	if err := WriteNew(path, []byte(content), 0o600); err != nil {
		return "", err
	}
	return id.Recipient().String(), nil
}

// WriteNew writes a file that must not exist yet, and syncs it.
func WriteNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
