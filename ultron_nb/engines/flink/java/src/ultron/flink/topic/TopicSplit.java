package ultron.flink.topic;

import org.apache.flink.api.connector.source.SourceSplit;

import javax.annotation.Nullable;

import java.io.Serializable;
import java.util.Objects;

/**
 * One partition of a topic, and how far it has been read: like a Kafka partition and its
 * offset. The position is a file of the partition and the number of its bytes already read
 * ({@code file == null}: nothing read yet). A bounded split ends after file {@code end}
 * (bounded with {@code end == null}: the partition had no file when the job started).
 */
public final class TopicSplit implements SourceSplit, Serializable {
    private static final long serialVersionUID = 1L;

    final String id;
    final String dir;
    final TopicLayout layout;
    final int partition;
    @Nullable final String file;
    final long offset;
    final boolean bounded;
    @Nullable final String end;

    TopicSplit(
            String id,
            String dir,
            TopicLayout layout,
            int partition,
            @Nullable String file,
            long offset,
            boolean bounded,
            @Nullable String end) {
        this.id = id;
        this.dir = dir;
        this.layout = layout;
        this.partition = partition;
        this.file = file;
        this.offset = offset;
        this.bounded = bounded;
        this.end = end;
    }

    @Override
    public String splitId() {
        return id;
    }

    TopicSplit at(@Nullable String newFile, long newOffset) {
        return new TopicSplit(id, dir, layout, partition, newFile, newOffset, bounded, end);
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof TopicSplit)) {
            return false;
        }
        TopicSplit s = (TopicSplit) o;
        return id.equals(s.id)
                && dir.equals(s.dir)
                && layout == s.layout
                && partition == s.partition
                && Objects.equals(file, s.file)
                && offset == s.offset
                && bounded == s.bounded
                && Objects.equals(end, s.end);
    }

    @Override
    public int hashCode() {
        return Objects.hash(id, dir, layout, partition, file, offset, bounded, end);
    }

    @Override
    public String toString() {
        return "TopicSplit{" + id + " " + dir + " at " + file + ":" + offset
                + (bounded ? " until " + end : "") + "}";
    }
}
