//! The conformance suite on PostgreSQL, each check in a fresh schema of the test database.

use retrace_store_postgres::testing::Schema;

retrace_store::conformance_suite!(
    optional || {
        let schema = Schema::fresh("postgres conformance")?;
        let store = schema.store();
        Some((schema, store))
    }
);
