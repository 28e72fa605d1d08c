// A pgjdbc session against EddyDB (compiled and run by tests/clients.rs).
//
// Usage: java -cp postgresql.jar:. Metadata JDBC_URL
//
// Owns what a Java tool (an IDE, an ORM, a schema browser) asks of a server
// through DatabaseMetaData -- tables, columns, primary keys -- plus one
// parameterised INSERT and SELECT in pgjdbc's default extended-protocol mode.
// It checks nothing itself: it prints one stable line per fact and the Rust
// test asserts on them, so a failure shows everything the server answered.
// Any SQLException propagates, so the JVM prints the server's message and
// exits non-zero.

import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Types;

public final class Metadata {
    private Metadata() {}

    public static void main(String[] args) throws SQLException {
        if (args.length != 1) {
            System.err.println("usage: Metadata JDBC_URL");
            System.exit(2);
        }
        try (Connection conn = DriverManager.getConnection(args[0])) {
            DatabaseMetaData meta = conn.getMetaData();
            printTables(meta);
            printColumns(meta);
            printPrimaryKeys(meta);
            insertAndSelect(conn);
        }
        System.out.println("jdbc metadata: ok");
    }

    private static void printTables(DatabaseMetaData meta) throws SQLException {
        try (ResultSet rs = meta.getTables(null, "public", "%", new String[] {"TABLE"})) {
            while (rs.next()) {
                System.out.println("table " + rs.getString("TABLE_SCHEM") + "."
                        + rs.getString("TABLE_NAME") + " type=" + rs.getString("TABLE_TYPE"));
            }
        }
    }

    // COLUMN_DEF and the scale are printed on lines of their own so the
    // column line keeps the same shape for every type.
    private static void printColumns(DatabaseMetaData meta) throws SQLException {
        try (ResultSet rs = meta.getColumns(null, "public", "orders", "%")) {
            while (rs.next()) {
                String column = rs.getString("TABLE_NAME") + "." + rs.getString("COLUMN_NAME");
                System.out.println("column " + column + " " + rs.getString("TYPE_NAME") + " "
                        + rs.getInt("COLUMN_SIZE") + " nullable=" + rs.getInt("NULLABLE"));
                int dataType = rs.getInt("DATA_TYPE");
                if (dataType == Types.NUMERIC || dataType == Types.DECIMAL) {
                    System.out.println("scale " + column + " " + rs.getInt("DECIMAL_DIGITS"));
                }
                String def = rs.getString("COLUMN_DEF");
                if (def != null) {
                    System.out.println("default " + column + " " + def);
                }
            }
        }
    }

    private static void printPrimaryKeys(DatabaseMetaData meta) throws SQLException {
        try (ResultSet rs = meta.getPrimaryKeys(null, "public", "orders")) {
            while (rs.next()) {
                System.out.println("pk " + rs.getString("TABLE_NAME") + "."
                        + rs.getString("COLUMN_NAME") + " seq=" + rs.getInt("KEY_SEQ")
                        + " name=" + rs.getString("PK_NAME"));
            }
        }
    }

    private static void insertAndSelect(Connection conn) throws SQLException {
        String insert = "INSERT INTO orders (id, name, amount) VALUES (?, ?, ?)";
        try (PreparedStatement ps = conn.prepareStatement(insert)) {
            ps.setInt(1, 1);
            ps.setString(2, "ada");
            ps.setBigDecimal(3, new BigDecimal("12.50"));
            System.out.println("inserted " + ps.executeUpdate());
        }
        try (PreparedStatement ps = conn.prepareStatement("SELECT name FROM orders WHERE id = ?")) {
            // Alternating ids (one row, then none) show a statement that
            // ignores its parameter; six runs pass pgjdbc's default
            // prepareThreshold of 5, so the later ones use a named
            // server-side statement rather than the unnamed one.
            for (int run = 0; run < 6; run++) {
                int id = 1 + run % 2;
                ps.setInt(1, id);
                int rows = 0;
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        System.out.println("row " + rs.getString(1));
                        rows++;
                    }
                }
                System.out.println("rows id=" + id + " " + rows);
            }
        }
    }
}
