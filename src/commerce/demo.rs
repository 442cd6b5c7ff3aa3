//! `--demo`: sample products, orders and notifications for an empty store.

use crate::commerce::model::{Decimal, Timestamp};
use crate::store::{Store, StoreError, notifications, orders, products};

/// Fills the store when it has no products and no orders; otherwise leaves it alone.
pub async fn seed(store: &Store) -> Result<(), StoreError> {
    let pool = store.pool();
    if orders::count(pool).await? > 0 || !products::list(pool, 1).await?.is_empty() {
        return Ok(());
    }
    let mut tx = store.write().await?;
    let now = Timestamp::now();
    let price = |s: &str| s.parse::<Decimal>().expect("valid sample amount");
    for (sku, name, amount, quantity) in [
        ("KB-001", "Mechanical keyboard", "129.00", 25),
        ("MS-001", "Wireless mouse", "49.99", 120),
        ("MN-027", "27-inch monitor", "329.00", 8),
    ] {
        products::insert(tx.conn(), sku, name, price(amount), quantity, now).await?;
    }
    for (number, customer, total, currency) in [
        ("SB-DEMO-0001", "customer-1", "178.99", "USD"),
        ("SB-DEMO-0002", "customer-1", "49.99", "USD"),
        ("SB-DEMO-0003", "customer-2", "329.00", "EUR"),
    ] {
        let order =
            orders::NewOrder { order_number: number, customer_id: customer, total: price(total), currency, at: now };
        orders::insert(tx.conn(), order).await?;
    }
    let welcome = notifications::NewNotification {
        user_id: "customer-1",
        kind: "info",
        title: "Welcome",
        message: "Thanks for trying Switchboard",
        at: now,
    };
    notifications::insert(tx.conn(), welcome).await?;
    tx.commit().await?;
    tracing::info!("demo data added: 3 products, 3 orders, 1 notification");
    Ok(())
}
