// Package builtin holds Consilium's default policy bundle: the Rego rules,
// their tests and the data (cross-border table, purposes, de-identification
// profiles) that the gateway uses when no compliance officer has activated
// another bundle. The files next to this one are an ordinary OPA bundle
// directory: `consilium policy test policy/builtin` runs its tests and
// `opa build -b policy/builtin` packs it for upload. README.md documents the
// rules and the legal basis of every cross-border entry.
package builtin

import (
	"embed"
	"io/fs"
)

//go:embed .manifest *.rego consilium/data.json
var files embed.FS

// FS returns the bundle's files, rooted at the bundle directory.
func FS() fs.FS { return files }
