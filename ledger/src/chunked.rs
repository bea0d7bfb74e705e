//! Growing storage in fixed-size chunks: at millions of payments a single `Vec` doubling
//! would copy hundreds of megabytes and briefly hold both copies; chunks never move.

/// Elements per chunk of a [`Chunked`].
const CHUNK_ITEMS: usize = 1 << 16;
/// Bytes per chunk of an [`IdArena`] (an id never spans two chunks).
pub(crate) const ID_CHUNK_BYTES: usize = 1 << 20;

/// A vector that grows a chunk at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked { chunks: Vec::new(), len: 0 }
    }
}

impl<T> Chunked<T> {
    pub(crate) fn push(&mut self, item: T) -> usize {
        match self.chunks.last_mut() {
            Some(c) if c.len() < CHUNK_ITEMS => c.push(item),
            _ => {
                let mut c = Vec::with_capacity(CHUNK_ITEMS);
                c.push(item);
                self.chunks.push(c);
            }
        }
        self.len += 1;
        self.len - 1
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / CHUNK_ITEMS)?.get(i % CHUNK_ITEMS)
    }

    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.chunks.get_mut(i / CHUNK_ITEMS)?.get_mut(i % CHUNK_ITEMS)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.capacity() * std::mem::size_of::<T>()).sum()
    }
}

/// Short strings stored end to end in chunks; each is found again by the place
/// [`IdArena::push`] returned (`chunk << 20 | offset`) and its length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IdArena {
    pub(crate) chunks: Vec<String>,
}

impl IdArena {
    pub(crate) fn push(&mut self, id: &str) -> u64 {
        let full = self.chunks.last().is_none_or(|c| c.len() + id.len() > ID_CHUNK_BYTES);
        if full {
            self.chunks.push(String::with_capacity(ID_CHUNK_BYTES.max(id.len())));
        }
        let n = self.chunks.len() - 1;
        let chunk = &mut self.chunks[n];
        let offset = chunk.len();
        chunk.push_str(id);
        ((n as u64) << 20) | offset as u64
    }

    /// The id at `place` of `len` bytes; `None` when that is not a whole id's place.
    pub(crate) fn get(&self, place: u64, len: usize) -> Option<&str> {
        let chunk = self.chunks.get((place >> 20) as usize)?;
        let offset = (place & ((1 << 20) - 1)) as usize;
        chunk.get(offset..offset.checked_add(len)?)
    }

    pub(crate) fn bytes(&self) -> usize {
        self.chunks.iter().map(String::capacity).sum()
    }
}
