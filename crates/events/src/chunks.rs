//! Deleting bookkeeping rows a bounded chunk at a time, so that no statement holds a
//! table for long.

use std::future::Future;

/// Rows one statement deletes at most.
const CHUNK: i64 = 5000;

/// Runs `delete` (given the chunk size, returning how many rows it deleted) until a chunk
/// comes back short; returns how many rows were deleted in all.
pub(crate) async fn delete_in_chunks<F, Fut>(mut delete: F) -> sqlx::Result<u64>
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = sqlx::Result<u64>>,
{
    let mut deleted = 0;
    loop {
        let n = delete(CHUNK).await?;
        deleted += n;
        if n < CHUNK as u64 {
            return Ok(deleted);
        }
    }
}
