// Prints what the Java producer computes for keyed records, so that
// tests/tests/partitioner_interop.rs can compare kafka-wire's partitioner with it.
//
// Input (stdin): one key per line, hex-encoded; an empty line is the empty key.
// Output (stdout): per key, "murmur2 partition_for_6 partition_for_7 partition_for_100".
//
// Run with Java 11+ single-file source launch, no javac step:
//   java -cp '.kafka/libs/<version>/*' tests/java/PartitionerCheck.java < keys.txt

import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.nio.charset.StandardCharsets;

import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;
import org.apache.kafka.common.utils.Utils;

public class PartitionerCheck {
    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
        BufferedWriter out = new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.US_ASCII));
        String line;
        int lineNo = 0;
        while ((line = in.readLine()) != null) {
            lineNo++;
            byte[] key = decodeHex(line.trim(), lineNo);
            int hash = Utils.murmur2(key);
            // partitionForKey is what the producer itself calls for keyed records; checking it
            // against toPositive(murmur2) % n guards against a future change on either side.
            int[] counts = {6, 7, 100};
            StringBuilder sb = new StringBuilder().append(hash);
            for (int n : counts) {
                int p = BuiltInPartitioner.partitionForKey(key, n);
                if (p != Utils.toPositive(hash) % n) {
                    throw new IllegalStateException("line " + lineNo + ": partitionForKey disagrees with toPositive(murmur2) % " + n);
                }
                sb.append(' ').append(p);
            }
            out.write(sb.toString());
            out.newLine();
        }
        out.flush();
    }

    private static byte[] decodeHex(String s, int lineNo) {
        if (s.length() % 2 != 0) {
            throw new IllegalArgumentException("line " + lineNo + ": odd number of hex digits");
        }
        byte[] b = new byte[s.length() / 2];
        for (int i = 0; i < b.length; i++) {
            int hi = Character.digit(s.charAt(2 * i), 16);
            int lo = Character.digit(s.charAt(2 * i + 1), 16);
            if (hi < 0 || lo < 0) {
                throw new IllegalArgumentException("line " + lineNo + ": not hex: " + s);
            }
            b[i] = (byte) ((hi << 4) | lo);
        }
        return b;
    }
}
