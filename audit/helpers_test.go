package audit_test

import "path/filepath"

var filepathGlob = filepath.Glob
