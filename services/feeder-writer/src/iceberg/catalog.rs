//! Opening the catalog the settings name, with the namespace in place.
//!
//! SQLite and Postgres go through iceberg-rust's SQL catalog (the schema pyiceberg's
//! `SqlCatalog` and Java's `JdbcCatalog` use, so either can open the same tables); an
//! `http(s)://` URI is a REST catalog. Data and metadata files are written through the
//! local-disk `FileIO`, or with S3 storage through the writer's S3 client
//! ([`super::s3_warehouse`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use iceberg::io::{LocalFsStorageFactory, StorageFactory};
use iceberg::{Catalog, CatalogBuilder, ErrorKind, NamespaceIdent};
use iceberg_catalog_rest::{
    REST_CATALOG_PROP_URI, REST_CATALOG_PROP_WAREHOUSE, RestCatalogBuilder,
};
use iceberg_catalog_sql::{
    SQL_CATALOG_PROP_BIND_STYLE, SQL_CATALOG_PROP_URI, SQL_CATALOG_PROP_WAREHOUSE, SqlBindStyle,
    SqlCatalogBuilder,
};

use super::err;
use super::s3_warehouse::{S3Warehouse, S3WarehouseFactory};
use super::settings::{CatalogKind, IcebergSettings};
use crate::{Error, Result};

/// The catalog of `settings` (defaults resolved under `root`) and its namespace, created
/// when missing.
pub async fn open(
    settings: &IcebergSettings,
    root: &Path,
) -> Result<(Arc<dyn Catalog>, NamespaceIdent)> {
    settings.validate()?;
    let uri = settings.catalog_uri(root);
    let warehouse = settings.warehouse(root);
    let kind = CatalogKind::of(&uri)?;
    if settings.catalog_uri.is_none() {
        let dir = root.join("iceberg");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    if !warehouse.contains("://") {
        std::fs::create_dir_all(&warehouse).map_err(|e| Error::io(&warehouse, e))?;
    }
    let storage: Arc<dyn StorageFactory> = match &settings.s3 {
        Some(s3) => Arc::new(S3WarehouseFactory(S3Warehouse::new(s3)?)),
        None => Arc::new(LocalFsStorageFactory),
    };
    let catalog: Arc<dyn Catalog> = match kind {
        CatalogKind::Sqlite | CatalogKind::Postgres => {
            let style = if kind == CatalogKind::Sqlite {
                SqlBindStyle::QMark
            } else {
                SqlBindStyle::DollarNumeric
            };
            let props = HashMap::from([
                (SQL_CATALOG_PROP_URI.to_string(), uri.clone()),
                (SQL_CATALOG_PROP_WAREHOUSE.to_string(), warehouse),
                (SQL_CATALOG_PROP_BIND_STYLE.to_string(), style.to_string()),
            ]);
            Arc::new(
                SqlCatalogBuilder::default()
                    .with_storage_factory(storage)
                    .load(&settings.catalog_name, props)
                    .await
                    .map_err(|e| err(&format!("catalog {uri}"), e))?,
            )
        }
        CatalogKind::Rest => {
            let props = HashMap::from([
                (REST_CATALOG_PROP_URI.to_string(), uri.clone()),
                (REST_CATALOG_PROP_WAREHOUSE.to_string(), warehouse),
            ]);
            Arc::new(
                RestCatalogBuilder::default()
                    .with_storage_factory(storage)
                    .load(&settings.catalog_name, props)
                    .await
                    .map_err(|e| err(&format!("catalog {uri}"), e))?,
            )
        }
    };
    let ns = NamespaceIdent::new(settings.namespace.clone());
    ensure_namespace(catalog.as_ref(), &ns).await?;
    Ok((catalog, ns))
}

async fn ensure_namespace(catalog: &dyn Catalog, ns: &NamespaceIdent) -> Result<()> {
    if catalog
        .namespace_exists(ns)
        .await
        .map_err(|e| err("namespace_exists", e))?
    {
        return Ok(());
    }
    match catalog.create_namespace(ns, HashMap::new()).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NamespaceAlreadyExists => Ok(()),
        // another writer created it between the check and the create
        Err(_) if catalog.namespace_exists(ns).await.unwrap_or(false) => Ok(()),
        Err(e) => Err(err("create_namespace", e)),
    }
}
