package ultron.flink.topic;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Where the files of one partition live and in which order they are read.
 *
 * <ul>
 *   <li>{@code TOPIC}: a local topic. Partition {@code k} is the directory {@code pNNNN/} under
 *       the topic; its files are {@code seg-NNNNNNNN.jsonl}, ordered by that number. Writers
 *       create a segment under a hidden name and rename it into place, in sequence.
 *   <li>{@code SINK}: the output of a Flink node. Every file is in one directory; partition
 *       {@code k} is sink subtask {@code k}, whose committed files are {@code
 *       part-<uuid>-<k>-<counter>}, ordered by the counter. In-progress files are hidden
 *       ({@code .part-...inprogress...}) and never read.
 * </ul>
 */
public enum TopicLayout {
    TOPIC {
        private final Pattern segment = Pattern.compile("seg-(\\d+)\\.jsonl");

        @Override
        public Path partitionDir(Path root, int partition) {
            return root.resolve(String.format(Locale.ROOT, "p%04d", partition));
        }

        @Override
        public long sequence(String fileName, int partition) {
            Matcher m = segment.matcher(fileName);
            return m.matches() ? number(m.group(1)) : -1;
        }

        @Override
        public String splitId(int partition) {
            return String.format(Locale.ROOT, "p%04d", partition);
        }
    },
    SINK {
        private final Pattern part =
                Pattern.compile("part-(.+)-(?:task-)?(\\d+)-(?:file-)?(\\d+)(\\.[^.]*)?");

        @Override
        public Path partitionDir(Path root, int partition) {
            return root;
        }

        @Override
        public long sequence(String fileName, int partition) {
            Matcher m = part.matcher(fileName);
            if (!m.matches() || number(m.group(2)) != partition) {
                return -1;
            }
            return number(m.group(3));
        }

        @Override
        public String splitId(int partition) {
            return String.format(Locale.ROOT, "s%04d", partition);
        }
    };

    /** The directory holding the files of {@code partition}. */
    public abstract Path partitionDir(Path root, int partition);

    /** The position of a file in its partition, or -1 when it is not a file of it. */
    public abstract long sequence(String fileName, int partition);

    /** The id of the split that reads {@code partition}. */
    public abstract String splitId(int partition);

    /** A file-name number, or -1 when it does not fit a long (not a file of ours). */
    private static long number(String digits) {
        try {
            return Long.parseLong(digits);
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    public static TopicLayout of(String name) {
        for (TopicLayout layout : values()) {
            if (layout.name().equalsIgnoreCase(name)) {
                return layout;
            }
        }
        throw new IllegalArgumentException(
                "unknown layout '" + name + "' (expected 'topic' or 'sink')");
    }

    /** The files of {@code partition} in {@code dir}, in reading order. */
    public List<FileKey> list(Path dir, int partition) throws IOException {
        List<FileKey> files = new ArrayList<>();
        try (DirectoryStream<Path> stream = Files.newDirectoryStream(dir)) {
            for (Path path : stream) {
                String name = path.getFileName().toString();
                long seq = sequence(name, partition);
                if (seq >= 0 && Files.isRegularFile(path)) {
                    files.add(new FileKey(seq, name));
                }
            }
        } catch (NoSuchFileException e) {
            return Collections.emptyList();
        }
        Collections.sort(files);
        return files;
    }

    /** A file of a partition and its position in the partition's order. */
    public static final class FileKey implements Comparable<FileKey> {
        public final long seq;
        public final String name;

        public FileKey(long seq, String name) {
            this.seq = seq;
            this.name = name;
        }

        @Override
        public int compareTo(FileKey other) {
            int bySeq = Long.compare(seq, other.seq);
            return bySeq != 0 ? bySeq : name.compareTo(other.name);
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof FileKey && compareTo((FileKey) o) == 0;
        }

        @Override
        public int hashCode() {
            return Long.hashCode(seq) * 31 + name.hashCode();
        }

        @Override
        public String toString() {
            return name;
        }
    }
}
