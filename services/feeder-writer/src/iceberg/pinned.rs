//! A catalog view that lets one commit through only on top of the snapshot it was
//! checked against.
//!
//! iceberg-rust's `Transaction::commit` reloads the table and, if another commit landed
//! since, re-applies the append on the new state by itself. That is right for appends
//! that may go anywhere, and wrong for Feeder's: the offsets were checked against the old
//! state, and the new one may already hold the range (a zombie owner's commit). Through
//! this view, the reload of the pinned table fails when its current snapshot moved, so
//! the writer re-checks the offsets first ([`super::append`]). The catalog's own
//! compare-and-swap of the metadata location covers a commit landing after that reload.

use std::collections::HashMap;

use async_trait::async_trait;
use iceberg::table::Table;
use iceberg::{
    Catalog, Error, ErrorKind, Namespace, NamespaceIdent, Result, TableCommit, TableCreation,
    TableIdent,
};

/// Error message prefix of a moved pin (matched by [`is_conflict`]).
const MOVED: &str = "feeder: table moved since its offsets were checked";

#[derive(Debug)]
pub(crate) struct Pinned<'a> {
    pub inner: &'a dyn Catalog,
    pub table: &'a TableIdent,
    /// The current snapshot the offsets were read from (`None`: an empty table).
    pub snapshot: Option<i64>,
}

/// A commit lost to another one: reload, re-check, retry.
pub(crate) fn is_conflict(e: &iceberg::Error) -> bool {
    e.kind() == ErrorKind::CatalogCommitConflicts || e.message().starts_with(MOVED)
}

#[async_trait]
impl Catalog for Pinned<'_> {
    async fn load_table(&self, table: &TableIdent) -> Result<Table> {
        let t = self.inner.load_table(table).await?;
        let now = t.metadata().current_snapshot_id();
        if table == self.table && now != self.snapshot {
            // not retryable: the transaction must not re-apply on the new state by itself
            return Err(Error::new(
                ErrorKind::CatalogCommitConflicts,
                format!("{MOVED}: {:?} is now {now:?}", self.snapshot),
            )
            .with_retryable(false));
        }
        Ok(t)
    }

    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        self.inner.update_table(commit).await
    }

    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> Result<Namespace> {
        self.inner.get_namespace(namespace).await
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> Result<bool> {
        self.inner.namespace_exists(namespace).await
    }

    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> Result<()> {
        self.inner.drop_namespace(namespace).await
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        self.inner.list_tables(namespace).await
    }

    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> Result<Table> {
        self.inner.create_table(namespace, creation).await
    }

    async fn drop_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.drop_table(table).await
    }

    async fn table_exists(&self, table: &TableIdent) -> Result<bool> {
        self.inner.table_exists(table).await
    }

    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> Result<()> {
        self.inner.rename_table(src, dest).await
    }

    async fn register_table(&self, table: &TableIdent, metadata_location: String) -> Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }
}
