// Package archive owns the container archive that export writes and
// import reads: a gzip-compressed tar (PAX format) whose members, headers
// and contents alike, are summed as they pass, in a canonical form, and
// whose last member holds that sum. A reader checks it, so a truncated
// archive (no sum at the end) and a corrupted one (gzip's CRC, the tar
// structure, or the sum) are told from a good one; what the members mean
// is the caller's.
package archive

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/nixcell/nixcell/internal/fault"
)

// SumName is the last member: the hex SHA-256 of every member before it.
const SumName = "nixcell-archive.sha256"

// ErrCorrupt is the class of archives that are truncated or damaged.
var ErrCorrupt = fault.New(fault.Invalid, "corrupted archive")

// Writer writes an archive.
type Writer struct {
	gz  *gzip.Writer
	tw  *tar.Writer
	sum hash.Hash
}

// NewWriter returns a Writer to w. Compression favours speed: an archive
// is mostly a closure to move, not to keep.
func NewWriter(w io.Writer) *Writer {
	gz, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	return &Writer{gz: gz, tw: tar.NewWriter(gz), sum: sha256.New()}
}

// WriteHeader begins a member; its content follows through Write.
func (w *Writer) WriteHeader(h *tar.Header) error {
	if h.Name == SumName {
		return fmt.Errorf("%s is the archive's own member", SumName)
	}
	h.Format = tar.FormatPAX
	if h.ModTime.IsZero() {
		h.ModTime = time.Unix(0, 0) // what a reader finds for none
	}
	sumHeader(w.sum, h)
	return w.tw.WriteHeader(h)
}

// Write writes content of the current member.
func (w *Writer) Write(b []byte) (int, error) {
	n, err := w.tw.Write(b)
	w.sum.Write(b[:n])
	return n, err
}

// AddFile writes a whole regular file member.
func (w *Writer) AddFile(name string, data []byte) error {
	if err := w.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(data)), ModTime: time.Now().Truncate(time.Second)}); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}

// Close writes the sum and ends the archive. It does not close the
// underlying writer.
func (w *Writer) Close() error {
	sum := []byte(hex.EncodeToString(w.sum.Sum(nil)) + "\n")
	if err := w.tw.WriteHeader(&tar.Header{Name: SumName, Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(sum)), ModTime: time.Now().Truncate(time.Second)}); err != nil {
		return err
	}
	if _, err := w.tw.Write(sum); err != nil {
		return err
	}
	if err := w.tw.Close(); err != nil {
		return err
	}
	return w.gz.Close()
}

// xattrRecord is the prefix of the PAX records that are part of a
// member's identity; the others are how tar encodes the header's fields.
const xattrRecord = "SCHILY.xattr."

// sumHeader adds a header to the sum in a form that does not depend on
// how tar encoded it.
func sumHeader(h hash.Hash, hd *tar.Header) {
	fmt.Fprintf(h, "%q %d %o %d %d %d %q %d %d %d\n", hd.Name, hd.Typeflag, hd.Mode, hd.Uid, hd.Gid, hd.Size,
		hd.Linkname, hd.Devmajor, hd.Devminor, hd.ModTime.UnixNano())
	var keys []string
	for k := range hd.PAXRecords {
		if strings.HasPrefix(k, xattrRecord) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "%q=%q\n", k, hd.PAXRecords[k])
	}
}

// Reader reads an archive, checking it as it goes.
type Reader struct {
	gz      *gzip.Reader
	tr      *tar.Reader
	sum     hash.Hash
	current io.Reader // the content of the member last returned
	done    bool
}

// NewReader returns a Reader of r.
func NewReader(r io.Reader) (*Reader, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, corrupt(err)
	}
	gz.Multistream(false)
	return &Reader{gz: gz, tr: tar.NewReader(gz), sum: sha256.New()}, nil
}

func corrupt(err error) error {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return fmt.Errorf("%w: it ends too early (truncated)", ErrCorrupt)
	case errors.Is(err, ErrCorrupt):
		return err
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, err)
}

// Next returns the next member and its content, which is summed as it is
// read (what is left unread is read by the next call). After the last
// member it checks the sum and returns io.EOF; an archive that ends
// without its sum, or whose sum differs, is ErrCorrupt.
func (r *Reader) Next() (*tar.Header, io.Reader, error) {
	if r.done {
		return nil, nil, io.EOF
	}
	if r.current != nil {
		if _, err := io.Copy(io.Discard, r.current); err != nil {
			return nil, nil, corrupt(err)
		}
		r.current = nil
	}
	h, err := r.tr.Next()
	if err == io.EOF {
		return nil, nil, fmt.Errorf("%w: it ends before its checksum (truncated)", ErrCorrupt)
	}
	if err != nil {
		return nil, nil, corrupt(err)
	}
	if h.Name == SumName {
		return nil, nil, r.finish()
	}
	sumHeader(r.sum, h)
	r.current = &errReader{r: io.TeeReader(r.tr, r.sum)}
	return h, r.current, nil
}

// Drain reads what is left of the archive, unread members included, and
// says whether it is whole: nil for a whole archive, an ErrCorrupt error
// for a damaged or truncated one. A reader that found a member's content
// meaningless calls it to tell damage in transit (its gzip CRC or its sum
// fails) from an archive written that way: damaged data can inflate to
// garbage long before the check at the end would catch it.
func (r *Reader) Drain() error {
	for {
		_, _, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// finish checks the sum and that nothing follows it.
func (r *Reader) finish() error {
	want := hex.EncodeToString(r.sum.Sum(nil)) + "\n"
	got, err := io.ReadAll(io.LimitReader(r.tr, 100))
	if err != nil {
		return corrupt(err)
	}
	if string(got) != want {
		return fmt.Errorf("%w: its checksum does not match its content", ErrCorrupt)
	}
	if _, err := r.tr.Next(); err != io.EOF {
		return fmt.Errorf("%w: members follow its checksum", ErrCorrupt)
	}
	// The rest of the gzip stream, whose CRC and length are checked at
	// its end.
	if _, err := io.Copy(io.Discard, r.gz); err != nil {
		return corrupt(err)
	}
	r.done = true
	return io.EOF
}

// errReader turns the errors of a member's content into ErrCorrupt.
type errReader struct{ r io.Reader }

func (e *errReader) Read(b []byte) (int, error) {
	n, err := e.r.Read(b)
	if err != nil && err != io.EOF {
		err = corrupt(err)
	}
	return n, err
}
