package ultron.flink.topic;

import org.apache.flink.core.io.SimpleVersionedSerializer;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/** The enumerator's checkpoint: the splits not assigned to a reader yet. */
public final class TopicEnumeratorState {
    final List<TopicSplit> unassigned;

    TopicEnumeratorState(List<TopicSplit> unassigned) {
        this.unassigned = Collections.unmodifiableList(new ArrayList<>(unassigned));
    }

    /** Version 1: a count, then each split as {@link TopicSplitSerializer} writes it. */
    static final class Serializer implements SimpleVersionedSerializer<TopicEnumeratorState> {
        static final Serializer INSTANCE = new Serializer();
        private static final int VERSION = 1;

        @Override
        public int getVersion() {
            return VERSION;
        }

        @Override
        public byte[] serialize(TopicEnumeratorState state) throws IOException {
            ByteArrayOutputStream bytes = new ByteArrayOutputStream();
            try (DataOutputStream out = new DataOutputStream(bytes)) {
                out.writeInt(state.unassigned.size());
                for (TopicSplit split : state.unassigned) {
                    TopicSplitSerializer.write(split, out);
                }
            }
            return bytes.toByteArray();
        }

        @Override
        public TopicEnumeratorState deserialize(int version, byte[] serialized)
                throws IOException {
            if (version != VERSION) {
                throw new IOException("unknown enumerator state version " + version);
            }
            try (DataInputStream in =
                    new DataInputStream(new ByteArrayInputStream(serialized))) {
                int count = in.readInt();
                List<TopicSplit> splits = new ArrayList<>(count);
                for (int i = 0; i < count; i++) {
                    splits.add(TopicSplitSerializer.read(in));
                }
                return new TopicEnumeratorState(splits);
            }
        }
    }
}
