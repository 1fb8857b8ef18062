// PgJDBC through pgstrata (run by tests/integration/clients.rs as a single-file source
// program). Connection settings come from PGHOST, PGPORT, PGUSER, PGPASSWORD and
// PGDATABASE. Prints "ok" and exits 0 when every check passed.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

public class Jdbc {
    static Connection connect() throws SQLException {
        String url = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT")
                + "/" + System.getenv("PGDATABASE");
        Properties props = new Properties();
        props.setProperty("user", System.getenv("PGUSER"));
        props.setProperty("password", System.getenv("PGPASSWORD"));
        // Named server-side statements from the second execution on.
        props.setProperty("prepareThreshold", "2");
        return DriverManager.getConnection(url, props);
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    static void client(int id) throws SQLException {
        try (Connection c = connect()) {
            PreparedStatement p = c.prepareStatement("SELECT ?::int + 1, ?::text");
            for (int i = 0; i < 150; i++) {
                p.setInt(1, i);
                p.setString(2, "v" + id + "é" + i);
                try (ResultSet r = p.executeQuery()) {
                    check(r.next(), "a row");
                    check(r.getInt(1) == i + 1, "sum");
                    check(r.getString(2).equals("v" + id + "é" + i), "text");
                }
            }
            // A batch is pipelined: many Bind/Execute pairs before one Sync.
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TEMP TABLE batch (a int) ON COMMIT DROP");
            }
            PreparedStatement ins = c.prepareStatement("INSERT INTO batch VALUES (?)");
            for (int i = 0; i < 300; i++) {
                ins.setInt(1, i);
                ins.addBatch();
            }
            check(ins.executeBatch().length == 300, "batch counts");
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT count(*), sum(a) FROM batch")) {
                check(r.next() && r.getInt(1) == 300 && r.getLong(2) == 44850, "batch rows");
            }
            c.commit();
            try (Statement s = c.createStatement()) {
                s.executeQuery("SELECT 1 / 0");
                throw new AssertionError("no error");
            } catch (SQLException e) {
                check("22012".equals(e.getSQLState()), "SQLSTATE " + e.getSQLState());
            }
            c.rollback();
            c.setAutoCommit(true);
            for (int i = 0; i < 30; i++) {
                p.setInt(1, i);
                p.setString(2, "after");
                try (ResultSet r = p.executeQuery()) {
                    check(r.next() && r.getInt(1) == i + 1, "after rollback");
                }
            }
        }
    }

    public static void main(String[] args) throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(16);
        List<Future<?>> clients = new ArrayList<>();
        for (int n = 0; n < 16; n++) {
            final int id = n;
            clients.add(pool.submit(() -> {
                client(id);
                return null;
            }));
        }
        for (Future<?> f : clients) {
            f.get();
        }
        pool.shutdown();
        System.out.println("ok");
    }
}
