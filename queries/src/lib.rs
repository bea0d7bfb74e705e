//! `queries` will own the named `.sql` files (each with a header: name, description,
//! parameters) and the code that loads them. Nothing is implemented yet.
