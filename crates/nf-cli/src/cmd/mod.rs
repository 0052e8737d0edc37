pub mod bench;
pub mod chat;
pub mod datasets;
pub mod generate;
pub mod ingest;
pub mod inspect;
pub mod tokenize;
pub mod train;
