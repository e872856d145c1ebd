// Writes transactions with Kafka's Java producer, for the interop tests of read_committed.
// Usage: java -cp <kafka libs>/* TxnProducer.java BOOTSTRAP TOPIC PREFIX:commit|abort ...
// Each transaction writes ten records PREFIX-0 .. PREFIX-9 to partition 0, then commits or
// aborts as its argument says.
import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;

public class TxnProducer {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("transactional.id", "interop-" + args[1]);
        props.put("key.serializer", StringSerializer.class.getName());
        props.put("value.serializer", StringSerializer.class.getName());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            producer.initTransactions();
            for (int t = 2; t < args.length; t++) {
                String[] spec = args[t].split(":");
                producer.beginTransaction();
                for (int i = 0; i < 10; i++) {
                    producer.send(new ProducerRecord<>(args[1], 0, "k" + i, spec[0] + "-" + i)).get();
                }
                if (spec[1].equals("commit")) {
                    producer.commitTransaction();
                } else {
                    producer.abortTransaction();
                }
            }
        }
    }
}
