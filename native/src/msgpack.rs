//! Just enough msgpack: a reader that checks what Python's `msgpack.unpackb` (msgpack 1,
//! our defaults) would refuse, and a writer whose output is byte for byte what
//! `msgpack.Packer(use_bin_type=True)` gives for the same Python values.
//!
//! The reader never decides a refusal itself: whatever it does not take (an ext type, a map
//! key that is not a string, invalid UTF-8, nesting past the limit, trailing bytes) makes the
//! caller hand the record to the Python path, which names the reason.

/// One msgpack item's head: scalars whole, containers by their length.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Head<'a> {
    Nil,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
    Bin(&'a [u8]),
    Array(usize),
    Map(usize),
}

/// Not a value the fast path takes (the Python path then decides).
#[derive(Debug)]
pub struct Unsupported;

pub type Read<T> = Result<T, Unsupported>;

pub struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn take(&mut self, n: usize) -> Read<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Unsupported)?;
        if end > self.buf.len() {
            return Err(Unsupported);
        }
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn byte(&mut self) -> Read<u8> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Read<u64> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn text(&mut self, n: usize) -> Read<&'a str> {
        std::str::from_utf8(self.take(n)?).map_err(|_| Unsupported)
    }

    /// The next item's head; a container's items follow it.
    pub fn head(&mut self) -> Read<Head<'a>> {
        let marker = self.byte()?;
        Ok(match marker {
            0x00..=0x7f => Head::Int(i128::from(marker)),
            0x80..=0x8f => Head::Map(usize::from(marker & 0x0f)),
            0x90..=0x9f => Head::Array(usize::from(marker & 0x0f)),
            0xa0..=0xbf => {
                let n = usize::from(marker & 0x1f);
                Head::Str(self.text(n)?)
            }
            0xc0 => Head::Nil,
            0xc2 => Head::Bool(false),
            0xc3 => Head::Bool(true),
            0xc4..=0xc6 => {
                let n = self.be(1 << (marker - 0xc4))? as usize;
                Head::Bin(self.take(n)?)
            }
            0xca => Head::Float(f64::from(f32::from_bits(self.be(4)? as u32))),
            0xcb => Head::Float(f64::from_bits(self.be(8)?)),
            0xcc..=0xcf => Head::Int(i128::from(self.be(1 << (marker - 0xcc))?)),
            0xd0 => Head::Int(i128::from(self.be(1)? as u8 as i8)),
            0xd1 => Head::Int(i128::from(self.be(2)? as u16 as i16)),
            0xd2 => Head::Int(i128::from(self.be(4)? as u32 as i32)),
            0xd3 => Head::Int(i128::from(self.be(8)? as i64)),
            0xd9..=0xdb => {
                let n = self.be(1 << (marker - 0xd9))? as usize;
                Head::Str(self.text(n)?)
            }
            0xdc | 0xdd => Head::Array(self.be(2 << (marker - 0xdc))? as usize),
            0xde | 0xdf => Head::Map(self.be(2 << (marker - 0xde))? as usize),
            0xe0..=0xff => Head::Int(i128::from(marker as i8)),
            // 0xc1 (never used), ext types (0xc7-0xc9, 0xd4-0xd8)
            _ => return Err(Unsupported),
        })
    }

    /// Skip one whole item; containers may nest `depth` levels (Python's check_depth limit).
    pub fn skip(&mut self, depth: usize) -> Read<()> {
        let head = self.head()?;
        self.skip_rest(head, depth)
    }

    /// Skip the items of a container whose `head` was just read.
    pub fn skip_rest(&mut self, head: Head<'a>, depth: usize) -> Read<()> {
        match head {
            Head::Array(n) => {
                if depth == 0 {
                    return Err(Unsupported);
                }
                for _ in 0..n {
                    self.skip(depth - 1)?;
                }
            }
            Head::Map(n) => {
                if depth == 0 {
                    return Err(Unsupported);
                }
                for _ in 0..n {
                    // strict_map_key: str or bytes keys only
                    match self.head()? {
                        Head::Str(_) | Head::Bin(_) => {}
                        _ => return Err(Unsupported),
                    }
                    self.skip(depth - 1)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Writes msgpack as Python's msgpack packer does (smallest form; str as str, floats as double).
#[derive(Default)]
pub struct Writer {
    pub out: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            out: Vec::with_capacity(n),
        }
    }

    pub fn nil(&mut self) {
        self.out.push(0xc0);
    }

    pub fn bool(&mut self, value: bool) {
        self.out.push(if value { 0xc3 } else { 0xc2 });
    }

    pub fn int(&mut self, value: i128) {
        let out = &mut self.out;
        if value >= 0 {
            let v = value as u64;
            if v < 0x80 {
                out.push(v as u8);
            } else if v <= 0xff {
                out.extend_from_slice(&[0xcc, v as u8]);
            } else if v <= 0xffff {
                out.push(0xcd);
                out.extend_from_slice(&(v as u16).to_be_bytes());
            } else if v <= 0xffff_ffff {
                out.push(0xce);
                out.extend_from_slice(&(v as u32).to_be_bytes());
            } else {
                out.push(0xcf);
                out.extend_from_slice(&v.to_be_bytes());
            }
        } else {
            let v = value as i64;
            if v >= -32 {
                out.push(v as i8 as u8);
            } else if v >= -128 {
                out.extend_from_slice(&[0xd0, v as i8 as u8]);
            } else if v >= -32768 {
                out.push(0xd1);
                out.extend_from_slice(&(v as i16).to_be_bytes());
            } else if v >= -(1 << 31) {
                out.push(0xd2);
                out.extend_from_slice(&(v as i32).to_be_bytes());
            } else {
                out.push(0xd3);
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }

    pub fn float(&mut self, value: f64) {
        self.out.push(0xcb);
        self.out.extend_from_slice(&value.to_bits().to_be_bytes());
    }

    pub fn str(&mut self, value: &str) {
        let n = value.len();
        if n < 32 {
            self.out.push(0xa0 | n as u8);
        } else {
            self.sized(n, Some(0xd9), 0xda, 0xdb);
        }
        self.out.extend_from_slice(value.as_bytes());
    }

    pub fn bin(&mut self, value: &[u8]) {
        self.sized(value.len(), Some(0xc4), 0xc5, 0xc6);
        self.out.extend_from_slice(value);
    }

    pub fn array(&mut self, n: usize) {
        self.container(n, 0x90, 0xdc);
    }

    pub fn map(&mut self, n: usize) {
        self.container(n, 0x80, 0xde);
    }

    fn container(&mut self, n: usize, fix: u8, wide: u8) {
        if n < 16 {
            self.out.push(fix | n as u8);
        } else {
            self.sized(n, None, wide, wide + 1);
        }
    }

    /// A length `n` in the smallest of the 8- (where the format has one), 16- and 32-bit forms.
    fn sized(&mut self, n: usize, marker8: Option<u8>, marker16: u8, marker32: u8) {
        match marker8 {
            Some(marker) if n <= 0xff => self.out.extend_from_slice(&[marker, n as u8]),
            _ if n <= 0xffff => {
                self.out.push(marker16);
                self.out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                self.out.push(marker32);
                self.out.extend_from_slice(&(n as u32).to_be_bytes());
            }
        }
    }

    /// An optional int: nil for None.
    pub fn opt_int(&mut self, value: Option<i128>) {
        match value {
            Some(v) => self.int(v),
            None => self.nil(),
        }
    }
}
