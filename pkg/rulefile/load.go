package rulefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
)

// IsRuleFile reports whether a directory entry name is loaded as a rule
// file: it ends in .yaml or .yml (case-sensitive) and is not hidden, so
// editor swap and lock files (.00-base.yaml.swp, .#00-base.yaml) never
// load half-edited rules.
func IsRuleFile(name string) bool {
	if name == "" || strings.HasPrefix(name, ".") || strings.ContainsRune(name, '/') {
		return false
	}
	ext := filepath.Ext(name)
	return ext == ".yaml" || ext == ".yml"
}

// LoadDir reads every rule file in dir (see ReadDir) and validates them as
// one Set. A missing directory, or one without rule files, is an empty Set
// with a warning (S003-EC-013, S003-FR-038), not an error.
func LoadDir(dir string) (*Set, error) {
	srcs, warnings, err := ReadDir(dir)
	if err != nil {
		return nil, err
	}
	set, err := Build(srcs)
	if err != nil {
		return nil, err
	}
	if len(warnings) > 0 {
		set.Warnings = append(warnings, set.Warnings...)
	}
	return set, nil
}

// ReadDir reads the rule files of dir, non-recursively, sorted byte-wise by
// name: regular files (symlinks followed) for which IsRuleFile holds.
// Sub-directories are skipped. A rule file that cannot be read, is not a
// regular file or is larger than MaxFileSize is an error: leaving it out
// could drop a block rule. The warnings say when there is nothing to load.
func ReadDir(dir string) ([]Source, []string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, []string{fmt.Sprintf("rules directory %s does not exist: no rules loaded, everything is blocked", dir)}, nil
	}
	if err != nil {
		return nil, nil, &Error{File: dir, Err: fmt.Errorf("read rules directory: %w", err)}
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if IsRuleFile(e.Name()) {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	srcs := make([]Source, 0, len(names))
	for _, name := range names {
		path := filepath.Join(dir, name)
		fi, err := os.Stat(path)
		if err != nil {
			return nil, nil, &Error{File: name, Err: fmt.Errorf("read rule file: %w", err)}
		}
		if fi.IsDir() {
			continue
		}
		data, err := readRuleFile(path)
		if err != nil {
			return nil, nil, &Error{File: name, Err: err}
		}
		srcs = append(srcs, Source{Name: name, Data: data})
	}
	if len(srcs) == 0 {
		return nil, []string{fmt.Sprintf("no rule files (*.yaml, *.yml) in %s: no rules loaded, everything is blocked", dir)}, nil
	}
	return srcs, nil, nil
}

// readRuleFile reads at most MaxFileSize+1 bytes of a regular file. It
// opens non-blocking and checks the type on the open descriptor, so a FIFO
// swapped in after the directory scan cannot hang the daemon.
func readRuleFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("read rule file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read rule file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read rule file: %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read rule file %s: %w", path, err)
	}
	return data, nil
}

// Build validates already-read files as one Set, so that a caller can check
// a directory plus one more file (the approve flow) without writing it.
// files must be in load order: names valid per IsRuleFile, strictly
// increasing byte-wise. Rule IDs must be unique across all files. On error
// the Set is nil: nothing partial is ever returned (S003-FR-030).
func Build(files []Source) (*Set, error) {
	set := &Set{Files: make([]string, 0, len(files)), Rules: []Rule{}, Warnings: []string{}}
	type location struct {
		file string
		line int
	}
	seen := make(map[string]location)
	for i, src := range files {
		if !IsRuleFile(src.Name) {
			return nil, &Error{File: src.Name, Err: errors.New("not a rule file name: want a base name ending in .yaml or .yml, not starting with a dot")}
		}
		if i > 0 && src.Name <= files[i-1].Name {
			return nil, &Error{File: src.Name, Err: fmt.Errorf("files out of load order: %q comes after %q", src.Name, files[i-1].Name)}
		}
		f, err := parseFile(src.Name, src.Data, i)
		if err != nil {
			return nil, err
		}
		for _, r := range f.rules {
			if prev, ok := seen[r.ID]; ok {
				return nil, &Error{File: r.File, Line: r.Line, Rule: r.ID, Field: "id",
					Err: fmt.Errorf("duplicate rule ID %q (also at %s:%d)", r.ID, prev.file, prev.line)}
			}
			seen[r.ID] = location{r.File, r.Line}
		}
		set.Files = append(set.Files, src.Name)
		set.Rules = append(set.Rules, f.rules...)
		set.Warnings = append(set.Warnings, f.warnings...)
	}
	sort.SliceStable(set.Rules, func(i, j int) bool {
		a, b := &set.Rules[i], &set.Rules[j]
		if a.Priority != b.Priority {
			return a.Priority < b.Priority
		}
		if a.FileIndex != b.FileIndex {
			return a.FileIndex < b.FileIndex
		}
		return a.Position < b.Position
	})
	return set, nil
}
