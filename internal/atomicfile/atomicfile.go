// Package atomicfile writes state files so that a crash or a kill -9 at any
// moment leaves the old content or the new, never a torn file, and a nil
// error means the change is on disk.
//
// Temporary files are named ".<name>.tmp-*": a dotfile that ends in neither
// .json nor .yaml, so nothing that scans the directory (the rules watcher,
// the loader) ever reads a half-written file.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile replaces path with b (mode 0600): temp file, fsync, rename,
// fsync of the directory.
func WriteFile(path string, b []byte) error {
	dir := filepath.Dir(path)
	tmp, err := writeTemp(path, b)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// Create writes b to path (mode 0600) without ever replacing an existing
// file. The temp file is linked into place rather than renamed, because
// link(2) fails on an existing target where rename(2) would replace it; the
// error then wraps os.ErrExist.
func Create(path string, b []byte) error {
	tmp, err := writeTemp(path, b)
	if err != nil {
		return err
	}
	linkErr := os.Link(tmp, path)
	rmErr := os.Remove(tmp)
	if linkErr != nil {
		return linkErr
	}
	if rmErr != nil {
		// The file is in place; a stray hidden temp file is harmless, but
		// not having written path is the safer outcome.
		return errors.Join(rmErr, Remove(path))
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return errors.Join(err, Remove(path))
	}
	return nil
}

// Remove removes path and makes the removal durable.
func Remove(path string) error {
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// writeTemp writes b to a new synced file of mode 0600 next to path and
// returns its name. On error nothing is left behind.
func writeTemp(path string, b []byte) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return "", err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// syncDir fsyncs a directory so that a rename, link or unlink in it is on
// disk, not just the file's data.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
