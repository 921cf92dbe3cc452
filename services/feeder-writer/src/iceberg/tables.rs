//! The datasets as Iceberg tables: their schemas (from the Arrow schemas of
//! [`crate::schema`], the one definition of the columns), day partitioning of the time
//! column, creation when missing, and fitting a dataset batch to a table's current schema.
//!
//! Iceberg has no unsigned integers and stores timestamps in microseconds: `uint32` and
//! `uint64` columns become `long`, `timestamp(ms, UTC)` becomes `timestamptz`. Values are
//! cast on the way in; every uint32 fits, and uint64 values past `i64::MAX` (never sent by
//! any device so far) fail the flush rather than wrap.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::datatypes::{DataType, SchemaRef as ArrowSchemaRef};
use iceberg::spec::{
    ListType, NestedField, PrimitiveType, Schema, Transform, Type, UnboundPartitionSpec,
};
use iceberg::table::Table;
use iceberg::{Catalog, ErrorKind, NamespaceIdent, TableCreation, TableIdent};

use super::err;
use crate::schema::Dataset;
use crate::{Error, Result};

/// Table properties Feeder sets at creation.
fn properties() -> HashMap<String, String> {
    HashMap::from([
        ("write.format.default".into(), "parquet".into()),
        ("write.parquet.compression-codec".into(), "zstd".into()),
        ("feeder.contract".into(), "datasets 1.1".into()),
    ])
}

fn primitive(dt: &DataType) -> Option<PrimitiveType> {
    Some(match dt {
        DataType::Utf8 => PrimitiveType::String,
        DataType::Boolean => PrimitiveType::Boolean,
        DataType::Int32 => PrimitiveType::Int,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => PrimitiveType::Long,
        DataType::Float64 => PrimitiveType::Double,
        DataType::Binary => PrimitiveType::Binary,
        DataType::Timestamp(_, Some(_)) => PrimitiveType::Timestamptz,
        _ => return None,
    })
}

/// The Iceberg schema of `dataset`: top-level field ids 1..=n in column order, list
/// elements after them.
pub fn schema(dataset: Dataset) -> Result<Schema> {
    let arrow = dataset.schema();
    let mut next_id = arrow.fields().len() as i32 + 1;
    let mut fields = Vec::with_capacity(arrow.fields().len());
    for (i, f) in arrow.fields().iter().enumerate() {
        let unsupported = || {
            Error::Iceberg(format!(
                "{}.{}: no Iceberg type for {}",
                dataset.name(),
                f.name(),
                f.data_type()
            ))
        };
        let ty = match f.data_type() {
            DataType::List(el) => {
                let id = next_id;
                next_id += 1;
                let el_ty = primitive(el.data_type()).ok_or_else(unsupported)?;
                Type::List(ListType::new(Arc::new(NestedField::list_element(
                    id,
                    Type::Primitive(el_ty),
                    !el.is_nullable(),
                ))))
            }
            dt => Type::Primitive(primitive(dt).ok_or_else(unsupported)?),
        };
        let id = i as i32 + 1;
        let field = if f.is_nullable() {
            NestedField::optional(id, f.name(), ty)
        } else {
            NestedField::required(id, f.name(), ty)
        };
        fields.push(Arc::new(field));
    }
    Schema::builder()
        .with_fields(fields)
        .build()
        .map_err(|e| err(dataset.name(), e))
}

/// Day partitioning of the dataset's time column, as a partition field `<column>_day`.
pub fn partition_spec(dataset: Dataset, schema: &Schema) -> Result<UnboundPartitionSpec> {
    let column = dataset.time_column();
    let source = schema
        .field_by_name(column)
        .ok_or_else(|| Error::Iceberg(format!("{}: no time column {column}", dataset.name())))?;
    Ok(UnboundPartitionSpec::builder()
        .add_partition_field(source.id, format!("{column}_day"), Transform::Day)
        .map_err(|e| err(dataset.name(), e))?
        .build())
}

pub fn ident(namespace: &NamespaceIdent, dataset: Dataset) -> TableIdent {
    TableIdent::new(namespace.clone(), dataset.name().to_string())
}

/// Loads the table of `dataset`, creating it first when missing. Two writers creating it
/// at once: the loser loads the winner's table.
pub async fn load_or_create(
    catalog: &dyn Catalog,
    namespace: &NamespaceIdent,
    dataset: Dataset,
) -> Result<Table> {
    let id = ident(namespace, dataset);
    if catalog
        .table_exists(&id)
        .await
        .map_err(|e| err("table_exists", e))?
    {
        return catalog
            .load_table(&id)
            .await
            .map_err(|e| err("load_table", e));
    }
    let schema = schema(dataset)?;
    let spec = partition_spec(dataset, &schema)?;
    let creation = TableCreation::builder()
        .name(dataset.name().to_string())
        .schema(schema)
        .partition_spec(spec)
        .properties(properties())
        .build();
    match catalog.create_table(namespace, creation).await {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == ErrorKind::TableAlreadyExists => catalog
            .load_table(&id)
            .await
            .map_err(|e| err("load_table", e)),
        Err(e) => {
            // the SQL catalog reports a lost creation race as a unique-key violation
            if catalog.table_exists(&id).await.unwrap_or(false) {
                catalog
                    .load_table(&id)
                    .await
                    .map_err(|e| err("load_table", e))
            } else {
                Err(err("create_table", e))
            }
        }
    }
}

/// `batch` (a dataset batch of [`crate::convert`]) in the table's current Arrow schema
/// (`target`, with field ids): columns matched by name and cast; a column the table has
/// and the batch lacks (added by a later version) is null, which only an optional one
/// may be.
pub fn fit(batch: &RecordBatch, target: &ArrowSchemaRef) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let col = match batch.column_by_name(field.name()) {
            Some(col) => {
                let opts = arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                };
                arrow::compute::cast_with_options(col, field.data_type(), &opts)?
            }
            None if field.is_nullable() => new_null_array(field.data_type(), rows),
            None => {
                return Err(Error::Iceberg(format!(
                    "table column {} is required and this writer has no such column",
                    field.name()
                )));
            }
        };
        columns.push(col);
    }
    Ok(RecordBatch::try_new(Arc::clone(target), columns)?)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
    use iceberg::arrow::schema_to_arrow_schema;

    use super::*;

    #[test]
    fn every_dataset_has_an_iceberg_schema_partitioned_by_day() {
        for dataset in Dataset::ALL {
            let s = schema(dataset).unwrap();
            assert_eq!(
                s.as_struct().fields().len(),
                dataset.schema().fields().len(),
                "{}",
                dataset.name()
            );
            let spec = partition_spec(dataset, &s).unwrap();
            let f = &spec.fields()[0];
            assert_eq!(f.transform, Transform::Day);
            assert_eq!(f.name, format!("{}_day", dataset.time_column()));
        }
        let readings = schema(Dataset::Readings).unwrap();
        let seq = readings.field_by_name("seq").unwrap();
        assert_eq!(*seq.field_type, Type::Primitive(PrimitiveType::Long));
        assert!(seq.required);
        let ts = readings.field_by_name("ts").unwrap();
        assert_eq!(*ts.field_type, Type::Primitive(PrimitiveType::Timestamptz));
        assert!(!readings.field_by_name("unit").unwrap().required);
    }

    fn events_batch(seq: u64, ts_ms: i64) -> RecordBatch {
        use arrow::array::{StringArray, TimestampMillisecondArray, UInt64Array};
        let ts = || Arc::new(TimestampMillisecondArray::from(vec![ts_ms]).with_timezone("UTC"));
        RecordBatch::try_new(
            Dataset::Events.schema(),
            vec![
                Arc::new(StringArray::from(vec!["m-1"])),
                Arc::new(UInt64Array::from(vec![seq])),
                ts(),
                Arc::new(StringArray::from(vec!["cover_opened"])),
                Arc::new(StringArray::from(vec![""])),
                ts(),
            ],
        )
        .unwrap()
    }

    /// Casts to the table's types, and a column a later version added reads as null.
    #[test]
    fn a_batch_fits_the_current_table_schema() {
        let mut evolved = schema(Dataset::Events).unwrap();
        let next_id = evolved.highest_field_id() + 1;
        let mut fields: Vec<_> = evolved.as_struct().fields().to_vec();
        fields.push(Arc::new(NestedField::optional(
            next_id,
            "quality",
            Type::Primitive(PrimitiveType::String),
        )));
        evolved = Schema::builder().with_fields(fields).build().unwrap();
        let target = Arc::new(schema_to_arrow_schema(&evolved).unwrap());

        let batch = events_batch(7, 1_700_000_000_123);
        let fitted = fit(&batch, &target).unwrap();
        assert_eq!(fitted.num_rows(), 1);
        assert_eq!(
            fitted
                .column_by_name("seq")
                .unwrap()
                .as_primitive::<Int64Type>()
                .value(0),
            7
        );
        let ts = fitted.column_by_name("ts").unwrap();
        assert_eq!(
            ts.as_primitive::<TimestampMicrosecondType>().value(0),
            1_700_000_000_123_000
        );
        assert!(fitted.column_by_name("quality").unwrap().is_null(0));

        // a required column the writer does not know is refused
        let mut fields: Vec<_> = evolved.as_struct().fields().to_vec();
        fields.push(Arc::new(NestedField::required(
            next_id + 1,
            "must",
            Type::Primitive(PrimitiveType::Long),
        )));
        let strict = Schema::builder().with_fields(fields).build().unwrap();
        let target = Arc::new(schema_to_arrow_schema(&strict).unwrap());
        assert!(
            fit(&batch, &target)
                .unwrap_err()
                .to_string()
                .contains("must")
        );
    }
}
