"""hwmarket billing: price books, rating, invoices and Stripe sync."""
