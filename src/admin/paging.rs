//! The list endpoints' paging parameters, checked as the document states them: `limit` is
//! 1..=[`MAX_LIMIT`] (absent: [`DEFAULT_LIMIT`]); anything else is 400 `invalid_query`, never
//! silently clamped.

use super::error::{ApiError, ApiResult};

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

/// The page size a request asked for.
pub fn limit(given: Option<u32>) -> ApiResult<u32> {
    match given {
        None => Ok(DEFAULT_LIMIT),
        Some(n @ 1..=MAX_LIMIT) => Ok(n),
        Some(n) => Err(ApiError::InvalidQuery(format!(
            "`limit` must be between 1 and {MAX_LIMIT} (got {n})"
        ))),
    }
}

/// Longest transaction cursor accepted: 18 digits always fit an `i64`.
pub const MAX_TRANSACTION_CURSOR_DIGITS: usize = 18;

/// The transactions cursor: a ledger id, `[1-9][0-9]{0,17}` exactly (no sign, no leading zero,
/// not empty), as the document's pattern says.
pub fn transaction_cursor(given: Option<String>) -> ApiResult<Option<String>> {
    let Some(after) = given else {
        return Ok(None);
    };
    let ok = (1..=MAX_TRANSACTION_CURSOR_DIGITS).contains(&after.len())
        && !after.starts_with('0')
        && after.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(Some(after))
    } else {
        Err(ApiError::InvalidQuery(format!(
            "`after`: `{}` is not a transaction id",
            after.escape_debug()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_outside_the_range_are_refused_not_clamped() {
        assert_eq!(limit(None).ok(), Some(DEFAULT_LIMIT));
        assert_eq!(limit(Some(1)).ok(), Some(1));
        assert_eq!(limit(Some(1000)).ok(), Some(1000));
        for bad in [0, 1001, u32::MAX] {
            let e = limit(Some(bad)).err();
            assert!(
                e.as_ref().is_some_and(|e| e.code() == "invalid_query"),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn transaction_cursors_are_ledger_ids() {
        assert_eq!(transaction_cursor(None).ok(), Some(None));
        assert_eq!(
            transaction_cursor(Some("42".into())).ok(),
            Some(Some("42".into()))
        );
        for bad in ["", "0", "007", "-1", "+1", "1a", "1234567890123456789"] {
            assert!(transaction_cursor(Some(bad.into())).is_err(), "{bad:?}");
        }
    }
}
