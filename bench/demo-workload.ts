import type Database from 'better-sqlite3';

/**
 * The application side of the demo: an order-entry workload on Northwind and
 * an invoicing workload on Chinook. Every public method is one transaction
 * and returns the number of rows it inserted, updated or deleted.
 */

/** Seeded pseudo-random numbers (mulberry32), so a run can be repeated with its seed. */
export class Random {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** Returns a float in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Returns an integer in [min, max], both included. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** Returns one element of a non-empty list. */
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }

  /** Returns `count` distinct elements of a list (all of them when it is shorter). */
  sample<T>(items: readonly T[], count: number): T[] {
    const copy = [...items];
    for (let i = copy.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [copy[i], copy[j]] = [copy[j]!, copy[i]!];
    }
    return copy.slice(0, count);
  }
}

const DISCOUNTS = [0, 0, 0, 0.05, 0.1, 0.15, 0.2];

/** Order entry on Northwind: orders with their lines, shipping, restocking and removal of old orders. */
export class NorthwindWorkload {
  readonly #db: Database.Database;
  readonly #random: Random;
  readonly #customers: string[];
  readonly #employees: number[];
  readonly #shippers: number[];
  readonly #products: number[];
  readonly #statements;

  constructor(db: Database.Database, random: Random) {
    this.#db = db;
    this.#random = random;
    this.#customers = db.prepare('SELECT CustomerID FROM Customers').pluck().all() as string[];
    this.#employees = db.prepare('SELECT EmployeeID FROM Employees').pluck().all() as number[];
    this.#shippers = db.prepare('SELECT ShipperID FROM Shippers').pluck().all() as number[];
    this.#products = db.prepare("SELECT ProductID FROM Products WHERE Discontinued = '0'").pluck().all() as number[];

    this.#statements = {
      insertOrder: db.prepare(
        `INSERT INTO Orders (CustomerID, EmployeeID, OrderDate, RequiredDate, ShipVia, Freight,
           ShipName, ShipAddress, ShipCity, ShipRegion, ShipPostalCode, ShipCountry)
         SELECT CustomerID, ?, ?, ?, ?, ?, CompanyName, Address, City, Region, PostalCode, Country
         FROM Customers WHERE CustomerID = ?`,
      ),
      insertLine: db.prepare(
        `INSERT INTO [Order Details] (OrderID, ProductID, UnitPrice, Quantity, Discount)
         SELECT ?, ProductID, UnitPrice, ?, ? FROM Products WHERE ProductID = ?`,
      ),
      // SET expressions read the row's old values, so UnitsOnOrder gets what the stock could not cover.
      takeStock: db.prepare(
        `UPDATE Products SET UnitsInStock = MAX(UnitsInStock - @quantity, 0), UnitsOnOrder = UnitsOnOrder + MAX(@quantity - UnitsInStock, 0)
         WHERE ProductID = @productId`,
      ),
      shipOrder: db.prepare(
        `UPDATE Orders SET ShippedDate = ?
         WHERE OrderID = (SELECT OrderID FROM Orders WHERE ShippedDate IS NULL ORDER BY OrderID LIMIT 1)`,
      ),
      restock: db.prepare(
        `UPDATE Products SET UnitsInStock = UnitsInStock + UnitsOnOrder + ?, UnitsOnOrder = 0
         WHERE ProductID IN (SELECT ProductID FROM Products ORDER BY UnitsInStock, ProductID LIMIT 5)`,
      ),
      oldestOrder: db.prepare('SELECT MIN(OrderID) FROM Orders').pluck(),
      deleteLines: db.prepare('DELETE FROM [Order Details] WHERE OrderID = ?'),
      deleteOrder: db.prepare('DELETE FROM Orders WHERE OrderID = ?'),
    };
  }

  /** Places one order of 2 to 6 products for a random customer. */
  placeOrder(): number {
    return this.#db.transaction(() => this.#insertOrder())();
  }

  /** Marks the oldest unshipped order as shipped today. */
  shipOrder(): number {
    return this.#db.transaction(() => this.#statements.shipOrder.run(today()).changes)();
  }

  /** Refills the five products with the lowest stock. */
  restock(): number {
    return this.#db.transaction(() => this.#statements.restock.run(this.#random.int(20, 120)).changes)();
  }

  /** Deletes the oldest order and its lines, as an archiving job would. */
  deleteOldestOrder(): number {
    return this.#db.transaction(() => {
      const orderId = this.#statements.oldestOrder.get() as number | null;
      if (orderId === null) return 0;
      return this.#statements.deleteLines.run(orderId).changes + this.#statements.deleteOrder.run(orderId).changes;
    })();
  }

  /** Imports `count` orders in one transaction, as a batch upload from a sales channel would. */
  bulkImport(count: number): number {
    return this.#db.transaction(() => {
      let rows = 0;
      for (let i = 0; i < count; i++) rows += this.#insertOrder();
      return rows;
    })();
  }

  // Inserts an order, its lines and the stock updates; runs inside the caller's transaction.
  #insertOrder(): number {
    const random = this.#random;
    const statements = this.#statements;

    const required = new Date(Date.now() + 28 * 86_400_000);
    const order = statements.insertOrder.run(
      random.pick(this.#employees),
      today(),
      required.toISOString().slice(0, 10),
      random.pick(this.#shippers),
      random.int(100, 20_000) / 100,
      random.pick(this.#customers),
    );
    let rows = order.changes;

    for (const productId of random.sample(this.#products, random.int(2, 6))) {
      const quantity = random.int(1, 40);
      rows += statements.insertLine.run(order.lastInsertRowid, quantity, random.pick(DISCOUNTS), productId).changes;
      rows += statements.takeStock.run({ quantity, productId }).changes;
    }
    return rows;
  }
}

/** Invoicing on Chinook: track sales, invoice adjustments and refunds, and a catalog price change. */
export class ChinookWorkload {
  readonly #db: Database.Database;
  readonly #random: Random;
  readonly #customers: number[];
  readonly #tracks: number[];
  readonly #statements;

  constructor(db: Database.Database, random: Random) {
    this.#db = db;
    this.#random = random;
    this.#customers = db.prepare('SELECT CustomerId FROM Customer').pluck().all() as number[];
    this.#tracks = db.prepare('SELECT TrackId FROM Track').pluck().all() as number[];

    this.#statements = {
      insertInvoice: db.prepare(
        `INSERT INTO Invoice (CustomerId, InvoiceDate, BillingAddress, BillingCity, BillingState, BillingCountry, BillingPostalCode, Total)
         SELECT CustomerId, ?, Address, City, State, Country, PostalCode, 0 FROM Customer WHERE CustomerId = ?`,
      ),
      insertLine: db.prepare(
        `INSERT INTO InvoiceLine (InvoiceId, TrackId, UnitPrice, Quantity)
         SELECT ?, TrackId, UnitPrice, ? FROM Track WHERE TrackId = ?`,
      ),
      updateTotal: db.prepare(
        `UPDATE Invoice SET Total = (SELECT ROUND(SUM(UnitPrice * Quantity), 2) FROM InvoiceLine WHERE InvoiceId = @invoiceId)
         WHERE InvoiceId = @invoiceId`,
      ),
      lastLineId: db.prepare('SELECT MAX(InvoiceLineId) FROM InvoiceLine').pluck(),
      findLine: db.prepare(
        `SELECT InvoiceLineId AS lineId, InvoiceId AS invoiceId,
           (SELECT COUNT(*) FROM InvoiceLine AS other WHERE other.InvoiceId = line.InvoiceId) AS lines
         FROM InvoiceLine AS line WHERE InvoiceLineId >= ? ORDER BY InvoiceLineId LIMIT 1`,
      ),
      addQuantity: db.prepare('UPDATE InvoiceLine SET Quantity = Quantity + 1 WHERE InvoiceLineId = ?'),
      deleteLine: db.prepare('DELETE FROM InvoiceLine WHERE InvoiceLineId = ?'),
      reprice: db.prepare('UPDATE Track SET UnitPrice = ROUND(UnitPrice * ?, 2)'),
    };
  }

  /** Sells 1 to 5 tracks to a random customer: one invoice, its lines and its total. */
  sellInvoice(): number {
    const random = this.#random;
    const statements = this.#statements;

    return this.#db.transaction(() => {
      const invoice = statements.insertInvoice.run(now(), random.pick(this.#customers));
      let rows = invoice.changes;
      for (const trackId of random.sample(this.#tracks, random.int(1, 5))) {
        rows += statements.insertLine.run(invoice.lastInsertRowid, random.int(1, 2), trackId).changes;
      }
      return rows + statements.updateTotal.run({ invoiceId: invoice.lastInsertRowid }).changes;
    })();
  }

  /**
   * Changes one of the last 500 invoice lines: adds one to its quantity, or
   * refunds it (deletes the line) when its invoice has other lines. Then
   * recomputes the invoice's total.
   */
  adjustInvoice(): number {
    const random = this.#random;
    const statements = this.#statements;

    return this.#db.transaction(() => {
      const last = statements.lastLineId.get() as number;
      const line = statements.findLine.get(random.int(Math.max(1, last - 500), last)) as { lineId: number; invoiceId: number; lines: number } | undefined;
      if (line === undefined) return 0;

      const refund = line.lines > 1 && random.next() < 0.3;
      const rows = refund ? statements.deleteLine.run(line.lineId).changes : statements.addQuantity.run(line.lineId).changes;
      return rows + statements.updateTotal.run({ invoiceId: line.invoiceId }).changes;
    })();
  }

  /** Raises the price of every track by 10% in one transaction. */
  repriceCatalog(): number {
    return this.#db.transaction(() => this.#statements.reprice.run(1.1).changes)();
  }
}

/** Today's date as Northwind stores it, `YYYY-MM-DD`. */
function today(): string {
  return new Date().toISOString().slice(0, 10);
}

/** The current time as Chinook stores it, `YYYY-MM-DD HH:MM:SS`. */
function now(): string {
  return new Date().toISOString().slice(0, 19).replace('T', ' ');
}
