// Command verify-go checks a PhantomBand ledger published in the C2SP tlog-tiles layout with
// Go's golang.org/x/mod/sumdb/tlog and sumdb/note (Debian's golang-golang-x-mod-dev), and no
// code of PhantomBand's: the checkpoint's signatures (at least k of the keys given), the
// tree's hash recomputed from the hash tiles, inclusion proofs of sampled records read from
// the entry bundles (and, for measurement records, the measuring relay's signature), and
// consistency with an older checkpoint.
//
//	verify-go -dir DIR -k K -vkey VKEY [-vkey VKEY ...] [-old FILE] [-samples N] [-seed S]
//
// It prints one line saying what it checked and exits 0, or prints why not and exits 1.
package main

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"crypto/ed25519"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const height = 8
const width = 1 << height

type vkeys []string

func (v *vkeys) String() string     { return strings.Join(*v, ",") }
func (v *vkeys) Set(s string) error { *v = append(*v, s); return nil }

// indexPath writes n in groups of three digits, all but the last prefixed with x.
func indexPath(n int64) string {
	s := fmt.Sprintf("%03d", n%1000)
	for n >= 1000 {
		n /= 1000
		s = fmt.Sprintf("x%03d/%s", n%1000, s)
	}
	return s
}

// tilePath is C2SP's path of a tile (level "entries" for an entry bundle).
func tilePath(level string, n int64, w int) string {
	p := "tile/" + level + "/" + indexPath(n)
	if w < width {
		p += fmt.Sprintf(".p/%d", w)
	}
	return p
}

// readTile reads a tile of width w, or the first w of the full one that replaced it.
func readTile(dir, level string, n int64, w int) ([]byte, bool, error) {
	data, err := os.ReadFile(filepath.Join(dir, tilePath(level, n, w)))
	if err == nil || w == width || !errors.Is(err, fs.ErrNotExist) {
		return data, false, err
	}
	data, err = os.ReadFile(filepath.Join(dir, tilePath(level, n, width)))
	return data, true, err
}

type tileReader struct{ dir string }

func (r tileReader) Height() int { return height }

func (r tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		data, full, err := readTile(r.dir, strconv.Itoa(t.L), t.N, t.W)
		if err != nil {
			return nil, err
		}
		if full && len(data) >= t.W*tlog.HashSize {
			data = data[:t.W*tlog.HashSize]
		}
		if len(data) != t.W*tlog.HashSize {
			return nil, fmt.Errorf("%s: %d bytes, not %d", tilePath(strconv.Itoa(t.L), t.N, t.W), len(data), t.W*tlog.HashSize)
		}
		out[i] = data
	}
	return out, nil
}

func (r tileReader) SaveTiles([]tlog.Tile, [][]byte) {}

// record reads record i of a tree of size n from its entry bundle.
func record(dir string, i, n int64) ([]byte, error) {
	bundle := i / width
	w := int(n - bundle*width)
	if w > width {
		w = width
	}
	data, full, err := readTile(dir, "entries", bundle, w)
	if err != nil {
		return nil, err
	}
	want := w
	if full {
		want = width
	}
	var entries [][]byte
	for len(data) > 0 {
		if len(data) < 2 {
			return nil, fmt.Errorf("entry bundle %d: truncated length", bundle)
		}
		l := int(binary.BigEndian.Uint16(data))
		if len(data) < 2+l {
			return nil, fmt.Errorf("entry bundle %d: truncated entry", bundle)
		}
		entries = append(entries, data[2:2+l])
		data = data[2+l:]
	}
	if len(entries) != want {
		return nil, fmt.Errorf("entry bundle %d: %d entries, not %d", bundle, len(entries), want)
	}
	return entries[i%width], nil
}

// recordHeader starts every measurement record.
const recordHeader = "PhantomBand v1 measurement\n"

// checkRecord verifies a measurement record's signature: a signed note by the key its
// "relay" line carries, under the key name of its signature line.
func checkRecord(data []byte) error {
	text := string(data)
	if !strings.HasPrefix(text, recordHeader) {
		return errors.New("not a measurement record")
	}
	var key []byte
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "relay ") {
			k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(line, "relay "))
			if err != nil || len(k) != ed25519.PublicKeySize {
				return errors.New("bad relay line")
			}
			key = k
			break
		}
	}
	sig := strings.LastIndex(text, "\n\n— ")
	if key == nil || sig < 0 {
		return errors.New("no relay key or no signature")
	}
	name := strings.SplitN(text[sig+len("\n\n— "):], " ", 2)[0]
	vkey, err := note.NewEd25519VerifierKey(name, ed25519.PublicKey(key))
	if err != nil {
		return err
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return err
	}
	_, err = note.Open(data, note.VerifierList(verifier))
	return err
}

// open verifies a checkpoint's signatures (k of the known keys at least) and reads its tree.
func open(path string, known note.Verifiers, k int) (tlog.Tree, int, error) {
	msg, err := os.ReadFile(path)
	if err != nil {
		return tlog.Tree{}, 0, err
	}
	n, err := note.Open(msg, known)
	if err != nil {
		return tlog.Tree{}, 0, fmt.Errorf("%s: %v", path, err)
	}
	if len(n.Sigs) < k {
		return tlog.Tree{}, 0, fmt.Errorf("%s: %d signatures of known keys, %d needed", path, len(n.Sigs), k)
	}
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 {
		return tlog.Tree{}, 0, fmt.Errorf("%s: not a checkpoint", path)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 {
		return tlog.Tree{}, 0, fmt.Errorf("%s: bad tree size", path)
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return tlog.Tree{}, 0, fmt.Errorf("%s: bad root hash", path)
	}
	var tree tlog.Tree
	tree.N = size
	copy(tree.Hash[:], root)
	return tree, len(n.Sigs), nil
}

func run() error {
	var keys vkeys
	dir := flag.String("dir", "", "the log's directory (checkpoint, tile/...)")
	k := flag.Int("k", 1, "signatures of known keys needed")
	old := flag.String("old", "", "an older checkpoint the log must extend")
	samples := flag.Int("samples", 32, "records to prove included")
	seed := flag.Int64("seed", 1, "which records")
	flag.Var(&keys, "vkey", "a known key (name+hash+base64), repeatable")
	flag.Parse()
	if *dir == "" || len(keys) == 0 {
		return errors.New("usage: verify-go -dir DIR -k K -vkey VKEY... [-old FILE] [-samples N] [-seed S]")
	}
	var verifiers []note.Verifier
	for _, v := range keys {
		verifier, err := note.NewVerifier(v)
		if err != nil {
			return fmt.Errorf("vkey %q: %v", v, err)
		}
		verifiers = append(verifiers, verifier)
	}
	known := note.VerifierList(verifiers...)
	tree, signed, err := open(filepath.Join(*dir, "checkpoint"), known, *k)
	if err != nil {
		return err
	}
	hr := tlog.TileHashReader(tree, tileReader{*dir})
	th, err := tlog.TreeHash(tree.N, hr)
	if err != nil {
		return fmt.Errorf("tree hash from the tiles: %v", err)
	}
	if th != tree.Hash {
		return errors.New("the tiles' tree hash is not the checkpoint's")
	}
	rng := rand.New(rand.NewSource(*seed))
	proved, signedRecords := 0, 0
	for s := 0; s < *samples && tree.N > 0; s++ {
		i := rng.Int63n(tree.N)
		if s == 0 {
			i = tree.N - 1
		}
		data, err := record(*dir, i, tree.N)
		if err != nil {
			return err
		}
		p, err := tlog.ProveRecord(tree.N, i, hr)
		if err != nil {
			return fmt.Errorf("record %d: proof: %v", i, err)
		}
		if err := tlog.CheckRecord(p, tree.N, tree.Hash, i, tlog.RecordHash(data)); err != nil {
			return fmt.Errorf("record %d is not in the tree: %v", i, err)
		}
		proved++
		if strings.HasPrefix(string(data), recordHeader) {
			if err := checkRecord(data); err != nil {
				return fmt.Errorf("record %d: its relay's signature: %v", i, err)
			}
			signedRecords++
		}
	}
	consistent := ""
	if *old != "" {
		older, _, err := open(*old, known, *k)
		if err != nil {
			return err
		}
		if older.N > tree.N {
			return fmt.Errorf("the old checkpoint (%d) is larger than the new (%d)", older.N, tree.N)
		}
		p, err := tlog.ProveTree(tree.N, older.N, hr)
		if err != nil {
			return fmt.Errorf("consistency proof: %v", err)
		}
		if err := tlog.CheckTree(p, tree.N, tree.Hash, older.N, older.Hash); err != nil {
			return fmt.Errorf("the log does not extend the old checkpoint: %v", err)
		}
		consistent = fmt.Sprintf("; extends the checkpoint of size %d", older.N)
	}
	fmt.Printf("ok: tree of %d records, %d signatures of known keys, tiles hash to its root, %d records proved included (%d relay signatures checked)%s\n", tree.N, signed, proved, signedRecords, consistent)
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "verify-go:", err)
		os.Exit(1)
	}
}
