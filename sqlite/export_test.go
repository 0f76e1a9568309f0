package sqlite

import "database/sql"

// DB is the writer connection, for tests that look at the file under the
// store.
func (s *Store) DB() *sql.DB { return s.db }
