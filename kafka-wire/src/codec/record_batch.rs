//! Record batches (magic v2).
