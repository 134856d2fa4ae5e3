//! Kafka's zigzag varints (protobuf style), as used inside v2 records.

/// Reads from a byte slice, never past its end; every failure is `None`
/// because callers attach their own context.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// Returns the byte range of the next `len` bytes and skips them.
    pub(crate) fn take(&mut self, len: usize) -> Option<std::ops::Range<usize>> {
        let end = self.pos.checked_add(len)?;
        if end > self.buf.len() {
            return None;
        }
        let range = self.pos..end;
        self.pos = end;
        Some(range)
    }

    fn raw_varint(&mut self, max_bytes: u32) -> Option<u64> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let b = self.u8()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    pub(crate) fn varint(&mut self) -> Option<i32> {
        // Java's ByteUtils.readVarint accepts at most 5 bytes; the top bits of
        // the fifth byte are dropped there too, so truncate rather than reject.
        let raw = self.raw_varint(5)? as u32;
        Some(((raw >> 1) as i32) ^ -((raw & 1) as i32))
    }

    pub(crate) fn varlong(&mut self) -> Option<i64> {
        let raw = self.raw_varint(10)?;
        Some(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }
}

pub(crate) fn put_varint(buf: &mut Vec<u8>, v: i32) {
    put_raw(buf, ((v << 1) ^ (v >> 31)) as u32 as u64);
}

pub(crate) fn put_varlong(buf: &mut Vec<u8>, v: i64) {
    put_raw(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Writes a length-prefixed nullable byte string (length -1 for null); the
/// caller guarantees the length fits an i32.
pub(crate) fn put_nullable(buf: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => put_varint(buf, -1),
        Some(v) => {
            put_varint(buf, v.len() as i32);
            buf.extend_from_slice(v);
        }
    }
}

/// Writes the varint into a fixed buffer; returns its length.
pub(crate) fn encode_varint(out: &mut [u8; 5], v: i32) -> usize {
    let mut raw = ((v << 1) ^ (v >> 31)) as u32;
    let mut i = 0;
    while raw >= 0x80 && i < 4 {
        out[i] = (raw as u8) | 0x80;
        raw >>= 7;
        i += 1;
    }
    out[i] = raw as u8;
    i + 1
}

fn put_raw(buf: &mut Vec<u8>, mut raw: u64) {
    while raw >= 0x80 {
        buf.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    buf.push(raw as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip() {
        for v in [0, 1, -1, 63, -64, 64, 8191, 8192, i32::MAX, i32::MIN] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert!(buf.len() <= 5, "length of {v}");
            let mut c = Cursor::new(&buf);
            assert_eq!(c.varint(), Some(v));
            assert_eq!(c.remaining(), 0);
        }
    }

    #[test]
    fn varlong_round_trip() {
        for v in [0, 1, -1, i64::MAX, i64::MIN, -0x4355_544F_5645_5200] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            assert!(buf.len() <= 10, "length of {v}");
            let mut c = Cursor::new(&buf);
            assert_eq!(c.varlong(), Some(v));
        }
    }

    #[test]
    fn fixed_buffer_encoding_matches() {
        for v in [
            0,
            1,
            -1,
            63,
            64,
            -65,
            8191,
            8192,
            1 << 20,
            i32::MAX,
            i32::MIN,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let mut fixed = [0u8; 5];
            let n = encode_varint(&mut fixed, v);
            assert_eq!(&fixed[..n], &buf[..], "{v}");
        }
    }

    #[test]
    fn known_encodings_match_kafka() {
        // Values from Kafka's ByteUtilsTest.
        let mut buf = Vec::new();
        put_varint(&mut buf, 300);
        assert_eq!(buf, [0xd8, 0x04]);
        let mut buf = Vec::new();
        put_varint(&mut buf, -1);
        assert_eq!(buf, [0x01]);
    }

    #[test]
    fn unterminated_varint_is_rejected() {
        assert_eq!(Cursor::new(&[0x80; 5]).varint(), None);
        assert_eq!(Cursor::new(&[0x80; 10]).varlong(), None);
        assert_eq!(Cursor::new(&[0x80]).varint(), None);
        assert_eq!(Cursor::new(&[]).varlong(), None);
    }
}
