// Runs a Java program (a Kafka broker, MirrorMaker 2, Kafka's test clients)
// tied to the test that started it: when this JVM's standard input closes,
// it halts at once. The test bed keeps the write end of that pipe open, so
// a broker shared by the tests of one test binary stops when that binary
// exits, also when it is killed or panics, without an exit hook.
//
// Usage: java -cp <jars>:<this dir> Tether <main class> [args...]
import java.io.InputStream;
import java.lang.reflect.Method;
import java.util.Arrays;

public final class Tether {
    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: Tether <main class> [args...]");
            System.exit(2);
        }
        Thread watch = new Thread(() -> {
            InputStream in = System.in;
            byte[] buf = new byte[64];
            try {
                while (in.read(buf) >= 0) {
                    // Nothing is ever written; only the end of input matters.
                }
            } catch (Exception e) {
                // A broken pipe means the same as its end.
            }
            Runtime.getRuntime().halt(137);
        }, "cutover-tether");
        watch.setDaemon(true);
        watch.start();
        Method main = Class.forName(args[0]).getMethod("main", String[].class);
        main.invoke(null, (Object) Arrays.copyOfRange(args, 1, args.length));
    }
}
