//! A value one thread publishes to others that check it often: a reader compares the
//! generation (one atomic load) and takes the lock only when it moved on.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

/// A value the main thread publishes to every core: a core compares the generation (one
/// atomic load per turn) and takes the lock only when it moved on.
pub struct Published<T> {
    generation: AtomicU64,
    value: Mutex<T>,
}

impl<T> core::fmt::Debug for Published<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Published")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl<T: Clone> Published<T> {
    /// `value`, as generation 0.
    pub fn new(value: T) -> Self {
        Self {
            generation: AtomicU64::new(0),
            value: Mutex::new(value),
        }
    }

    /// The current generation, without the lock.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The value and its generation (read together under the lock).
    pub fn get(&self) -> (u64, T) {
        let value = self
            .value
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (self.generation(), value.clone())
    }

    /// Replaces the value; the generation moves on under the same lock.
    pub fn set(&self, value: T) {
        let mut current = self
            .value
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = value;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}
