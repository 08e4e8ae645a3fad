package ultron.flink.topic;

import org.apache.flink.core.io.SimpleVersionedSerializer;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;

/** Splits in checkpoints and savepoints (version 1). */
public final class TopicSplitSerializer implements SimpleVersionedSerializer<TopicSplit> {
    public static final TopicSplitSerializer INSTANCE = new TopicSplitSerializer();
    private static final int VERSION = 1;

    @Override
    public int getVersion() {
        return VERSION;
    }

    @Override
    public byte[] serialize(TopicSplit split) throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (DataOutputStream out = new DataOutputStream(bytes)) {
            write(split, out);
        }
        return bytes.toByteArray();
    }

    @Override
    public TopicSplit deserialize(int version, byte[] serialized) throws IOException {
        if (version != VERSION) {
            throw new IOException("unknown TopicSplit serialization version " + version);
        }
        try (DataInputStream in = new DataInputStream(new ByteArrayInputStream(serialized))) {
            return read(in);
        }
    }

    static void write(TopicSplit split, DataOutputStream out) throws IOException {
        out.writeUTF(split.id);
        out.writeUTF(split.dir);
        out.writeUTF(split.layout.name());
        out.writeInt(split.partition);
        writeNullable(split.file, out);
        out.writeLong(split.offset);
        out.writeBoolean(split.bounded);
        writeNullable(split.end, out);
    }

    static TopicSplit read(DataInputStream in) throws IOException {
        String id = in.readUTF();
        String dir = in.readUTF();
        TopicLayout layout = TopicLayout.valueOf(in.readUTF());
        int partition = in.readInt();
        String file = readNullable(in);
        long offset = in.readLong();
        boolean bounded = in.readBoolean();
        String end = readNullable(in);
        return new TopicSplit(id, dir, layout, partition, file, offset, bounded, end);
    }

    private static void writeNullable(String value, DataOutputStream out) throws IOException {
        out.writeBoolean(value != null);
        if (value != null) {
            out.writeUTF(value);
        }
    }

    private static String readNullable(DataInputStream in) throws IOException {
        return in.readBoolean() ? in.readUTF() : null;
    }
}
