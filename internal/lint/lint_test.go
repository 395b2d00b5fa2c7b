package lint

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// bypasses are the calls that write files without going through package
// vfs, by import path.
var bypasses = map[string]map[string]bool{
	"os":        {"Create": true, "CreateTemp": true, "OpenFile": true, "Rename": true, "WriteFile": true},
	"io/ioutil": {"TempFile": true, "WriteFile": true},
}

// TestDurableWritesGoThroughVFS: outside vfs/ (the OS implementation),
// cmd/ and internal/ (tools and test helpers), non-test code writes files
// only through a vfs.FS, so that every durable write can be crashed and
// faulted in tests (vfs.MemFS, errorfs) and uses vfs.WriteFileAtomic's
// fsyncs rather than a hand-rolled replace.
func TestDurableWritesGoThroughVFS(t *testing.T) {
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	checked := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			switch {
			case rel == ".":
				return nil
			case rel == "vfs", rel == "cmd", rel == "internal", rel == "testdata",
				strings.HasPrefix(d.Name(), "."), strings.HasPrefix(d.Name(), "_"), d.Name() == "testdata":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		checked++
		banned := map[string]map[string]bool{} // local import name -> calls
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if calls, ok := bypasses[path]; ok {
				name := filepath.Base(path)
				if imp.Name != nil {
					name = imp.Name.Name
				}
				banned[name] = calls
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if id, ok := sel.X.(*ast.Ident); ok && banned[id.Name][sel.Sel.Name] {
				t.Errorf("%s: %s.%s writes around vfs; use a vfs.FS (vfs.WriteFileAtomic to replace a file)",
					fset.Position(sel.Pos()), id.Name, sel.Sel.Name)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("checked only %d files: is the walk rooted at the module?", checked)
	}
}
