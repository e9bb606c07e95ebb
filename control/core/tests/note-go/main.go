// Command note-go signs and verifies C2SP signed notes with Go's golang.org/x/mod/sumdb/note
// (Debian's golang-golang-x-mod-dev), for control/core/tests/note_interop.rs:
//
//	note-go vkey NAME PUBHEX          the verifier key of an Ed25519 public key
//	note-go sign NAME SEEDHEX < TEXT  the note TEXT signed by the key of a 32-byte seed
//	note-go verify VKEY... < NOTE     the text, then "signer NAME" per verified signature;
//	                                  exit status 1 and the reason if the note is refused
package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, "note-go:", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 3 {
		fail(fmt.Errorf("usage: note-go vkey|sign|verify ..."))
	}
	switch os.Args[1] {
	case "vkey":
		pub, err := hex.DecodeString(os.Args[3])
		if err != nil {
			fail(err)
		}
		vkey, err := note.NewEd25519VerifierKey(os.Args[2], ed25519.PublicKey(pub))
		if err != nil {
			fail(err)
		}
		fmt.Println(vkey)
	case "sign":
		seed, err := hex.DecodeString(os.Args[3])
		if err != nil || len(seed) != ed25519.SeedSize {
			fail(fmt.Errorf("bad seed"))
		}
		pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
		vkey, err := note.NewEd25519VerifierKey(os.Args[2], pub)
		if err != nil {
			fail(err)
		}
		parts := strings.Split(vkey, "+")
		skey := fmt.Sprintf("PRIVATE+KEY+%s+%s+%s", parts[0], parts[1],
			base64.StdEncoding.EncodeToString(append([]byte{1}, seed...)))
		signer, err := note.NewSigner(skey)
		if err != nil {
			fail(err)
		}
		text, err := io.ReadAll(os.Stdin)
		if err != nil {
			fail(err)
		}
		msg, err := note.Sign(&note.Note{Text: string(text)}, signer)
		if err != nil {
			fail(err)
		}
		os.Stdout.Write(msg)
	case "verify":
		var verifiers []note.Verifier
		for _, vkey := range os.Args[2:] {
			v, err := note.NewVerifier(vkey)
			if err != nil {
				fail(err)
			}
			verifiers = append(verifiers, v)
		}
		msg, err := io.ReadAll(os.Stdin)
		if err != nil {
			fail(err)
		}
		n, err := note.Open(msg, note.VerifierList(verifiers...))
		if err != nil {
			fail(err)
		}
		fmt.Print(n.Text)
		for _, sig := range n.Sigs {
			fmt.Printf("signer %s\n", sig.Name)
		}
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}
