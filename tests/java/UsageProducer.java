import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * A service's own Kafka producer, as a Java shop would write it: the Apache client with its
 * default partitioner, keyed however the service likes.
 *
 * <p>Arguments: bootstrap servers, topic, compression type, a file of lines {@code key<TAB>json}
 * (an empty key sends the record without one). Exits non-zero if any record is not acknowledged.
 */
public final class UsageProducer {
  public static void main(String[] args) throws Exception {
    Properties props = new Properties();
    props.put("bootstrap.servers", args[0]);
    props.put("compression.type", args[2]);
    props.put("acks", "all");
    props.put("key.serializer", StringSerializer.class.getName());
    props.put("value.serializer", StringSerializer.class.getName());
    List<Future<RecordMetadata>> sent = new ArrayList<>();
    try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
      for (String line : Files.readAllLines(Paths.get(args[3]), StandardCharsets.UTF_8)) {
        int tab = line.indexOf('\t');
        String key = tab > 0 ? line.substring(0, tab) : null;
        sent.add(producer.send(new ProducerRecord<>(args[1], key, line.substring(tab + 1))));
      }
      producer.flush();
      for (Future<RecordMetadata> f : sent) {
        RecordMetadata m = f.get();
        System.out.println(m.partition() + " " + m.offset());
      }
    }
  }
}
