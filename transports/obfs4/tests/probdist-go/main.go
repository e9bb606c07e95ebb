// obfs4proxy's length and inter-arrival tables, with Go's own math/rand: for each
// "SEEDHEX MIN MAX" line on stdin, one line "N v1 v2 … w1 w2 …" (the values, then their
// weights with 17 significant digits), as common/probdist.New(seed, min, max, false) makes
// them over common/drbg's HashDrbg. SipHash-2-4 is written out here (dchest/siphash is not
// packaged in Debian) and checked against the reference vector first.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/bits"
	"math/rand"
	"os"
	"strings"
)

func sip24(k0, k1 uint64, m []byte) uint64 {
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	round := func() {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13)
		v1 ^= v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16)
		v3 ^= v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21)
		v3 ^= v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17)
		v1 ^= v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	n := len(m)
	i := 0
	for ; i+8 <= n; i += 8 {
		mi := binary.LittleEndian.Uint64(m[i:])
		v3 ^= mi
		round()
		round()
		v0 ^= mi
	}
	var last [8]byte
	copy(last[:], m[i:])
	last[7] = byte(n)
	mi := binary.LittleEndian.Uint64(last[:])
	v3 ^= mi
	round()
	round()
	v0 ^= mi
	v2 ^= 0xff
	round()
	round()
	round()
	round()
	return v0 ^ v1 ^ v2 ^ v3
}

// hashDrbg is common/drbg.HashDrbg: sip.Write(ofb); ofb = sip.Sum(nil), never reset.
type hashDrbg struct {
	k0, k1 uint64
	msg    []byte
	ofb    [8]byte
}

func (d *hashDrbg) Int63() int64 {
	d.msg = append(d.msg, d.ofb[:]...)
	binary.LittleEndian.PutUint64(d.ofb[:], sip24(d.k0, d.k1, d.msg))
	return int64(binary.BigEndian.Uint64(d.ofb[:]) & (1<<63 - 1))
}

func (d *hashDrbg) Seed(int64) {}

func main() {
	var km [15]byte
	for i := range km {
		km[i] = byte(i)
	}
	if sip24(0x0706050403020100, 0x0f0e0d0c0b0a0908, km[:]) != 0xa129ca6149be45e5 {
		fmt.Fprintln(os.Stderr, "siphash: wrong reference vector")
		os.Exit(1)
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var seedHex string
		var min, max int
		if _, err := fmt.Sscan(in.Text(), &seedHex, &min, &max); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		seed, err := hex.DecodeString(seedHex)
		if err != nil || len(seed) != 24 {
			fmt.Fprintln(os.Stderr, "bad seed")
			os.Exit(1)
		}
		d := &hashDrbg{k0: binary.LittleEndian.Uint64(seed[0:8]), k1: binary.LittleEndian.Uint64(seed[8:16])}
		copy(d.ofb[:], seed[16:])
		rng := rand.New(d)
		// probdist.genValues, then genUniformWeights.
		nValues := (max + 1) - min
		values := rng.Perm(nValues)
		if nValues < 1 {
			nValues = 1
		}
		if nValues > 100 {
			nValues = 100
		}
		nValues = rng.Intn(nValues) + 1
		values = values[:nValues]
		out := []string{fmt.Sprint(nValues)}
		for _, v := range values {
			out = append(out, fmt.Sprint(min+v))
		}
		for range values {
			out = append(out, fmt.Sprintf("%.17g", rng.Float64()))
		}
		fmt.Println(strings.Join(out, " "))
	}
}
