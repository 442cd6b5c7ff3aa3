//! One lock-poisoning policy for the whole server: a poisoned lock is used anyway.
//!
//! A `std` lock is poisoned when a thread panics while holding it. Every lock here guards a few
//! map or counter updates with no `.await` and no user code inside, so the data behind a poisoned
//! lock is as consistent as the panicking update left it — and the alternative is worse: the
//! guards that keep counts and presence honest unregister in `Drop`, and a `Drop` that panics
//! while a panic is unwinding aborts the whole process, every connection with it. So every lock
//! is taken through these helpers, in `Drop` and everywhere else alike.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_still_usable() {
        let mutex = Mutex::new(1);
        let _ = std::panic::catch_unwind(|| {
            let _guard = mutex.lock().unwrap();
            panic!("poison it");
        });
        assert!(mutex.is_poisoned());
        *lock(&mutex) += 1;
        assert_eq!(*lock(&mutex), 2);
    }
}
