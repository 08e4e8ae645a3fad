package ultron.flink.topic;

import org.apache.flink.connector.base.source.reader.RecordsBySplits;

import java.io.Closeable;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardOpenOption;
import java.util.Collections;
import java.util.List;

/**
 * Reads one partition strictly in order: the lines of its current file, then the next file
 * of the partition, and so on. At the end of the last file it tails: it lists the directory
 * again at most once per poll interval until the next file appears (live), or finishes once
 * it has read the split's last file (bounded).
 *
 * <p>Files are immutable once visible (segments are renamed into place; sink files are
 * renamed when a checkpoint commits them). The next file is the first one after the current
 * in the layout's order; when it is not the very next number, the directory is listed a
 * second time before taking it, so that a file renamed into place just before it, which a
 * listing racing with the renames may have missed, is not skipped. A listing is kept and
 * used while it holds the very next file, so a long backlog is not listed once per file.
 */
final class PartitionCursor implements Closeable {
    private static final int BUFFER = 64 * 1024;

    private final TopicSplit split;
    private final Path dir;
    private final long pollMillis;

    private String file; // the current file (null: before the first one)
    private long offset; // bytes of the current file already read
    private boolean fileDone; // the current file has been read to its end
    private FileChannel channel;
    private ByteBuffer buffer = emptyBuffer(BUFFER);
    private boolean finished;
    private long nextListing;
    private List<TopicLayout.FileKey> known = Collections.emptyList(); // the last listing

    PartitionCursor(TopicSplit split, long pollMillis) {
        this.split = split;
        this.dir = Paths.get(split.dir);
        this.pollMillis = pollMillis;
        this.file = split.file;
        this.offset = split.offset;
        this.fileDone = false;
        this.finished = split.bounded && split.end == null;
    }

    boolean isFinished() {
        return finished;
    }

    /** Reads up to {@code max} lines into {@code out}; returns how many it read. */
    int read(RecordsBySplits.Builder<TopicRecord> out, int max, long nowMillis)
            throws IOException {
        int count = 0;
        while (count < max && !finished) {
            if (channel == null && !open(nowMillis)) {
                break;
            }
            byte[] line = nextLine();
            if (line == null) {
                closeChannel();
                fileDone = true;
                continue;
            }
            if (!blank(line)) {
                out.add(split.id, new TopicRecord(line, file, offset));
                count++;
            }
        }
        return count;
    }

    /** Opens the current file where reading stopped, else the next one; false when none. */
    private boolean open(long nowMillis) throws IOException {
        if (file != null && !fileDone && openAt(file, offset)) {
            return true;
        }
        if (split.bounded && file != null && key(file).compareTo(key(split.end)) >= 0) {
            finished = true;
            return false;
        }
        if (nowMillis < nextListing) {
            return false;
        }
        TopicLayout.FileKey next = nextFile();
        if (next == null) {
            if (split.bounded) {
                finished = true; // its last file is gone: nothing more will come
            }
            nextListing = nowMillis + pollMillis;
            return false;
        }
        file = next.name;
        offset = 0;
        fileDone = false;
        if (!openAt(file, 0)) {
            fileDone = true; // deleted since the listing
        }
        return channel != null;
    }

    private TopicLayout.FileKey nextFile() throws IOException {
        long expected = file == null ? 0 : key(file).seq + 1;
        TopicLayout.FileKey next = firstAfter(known);
        if (next == null || next.seq != expected) {
            known = split.layout.list(dir, split.partition);
            next = firstAfter(known);
            if (next != null && next.seq != expected) {
                known = split.layout.list(dir, split.partition);
                next = firstAfter(known);
            }
        }
        return next;
    }

    /** The first of {@code files} (sorted) after the current file, not after a bounded end. */
    private TopicLayout.FileKey firstAfter(List<TopicLayout.FileKey> files) {
        int start = 0;
        if (file != null) {
            int found = Collections.binarySearch(files, key(file));
            start = found >= 0 ? found + 1 : -found - 1;
        }
        if (start >= files.size()) {
            return null;
        }
        TopicLayout.FileKey candidate = files.get(start);
        if (split.bounded && candidate.compareTo(key(split.end)) > 0) {
            return null;
        }
        return candidate;
    }

    private TopicLayout.FileKey key(String name) {
        return new TopicLayout.FileKey(split.layout.sequence(name, split.partition), name);
    }

    private boolean openAt(String name, long position) throws IOException {
        try {
            channel = FileChannel.open(dir.resolve(name), StandardOpenOption.READ);
        } catch (NoSuchFileException e) {
            return false;
        }
        channel.position(position);
        buffer = emptyBuffer(buffer.capacity());
        return true;
    }

    /** The next line of the open file (without its newline), or null at its end. */
    private byte[] nextLine() throws IOException {
        while (true) {
            int start = buffer.position();
            for (int i = start; i < buffer.limit(); i++) {
                if (buffer.get(i) == '\n') {
                    byte[] line = new byte[i - start];
                    buffer.get(line);
                    buffer.get();
                    offset += line.length + 1;
                    return line;
                }
            }
            buffer.compact();
            if (!buffer.hasRemaining()) { // a line longer than the buffer
                ByteBuffer bigger = ByteBuffer.allocate(buffer.capacity() * 2);
                buffer.flip();
                bigger.put(buffer);
                buffer = bigger;
            }
            int read = channel.read(buffer);
            buffer.flip();
            if (read < 0) {
                if (!buffer.hasRemaining()) {
                    return null;
                }
                byte[] line = new byte[buffer.remaining()]; // a last line without newline
                buffer.get(line);
                offset += line.length;
                return line;
            }
        }
    }

    private static boolean blank(byte[] line) {
        for (byte b : line) {
            if (b != ' ' && b != '\t' && b != '\r') {
                return false;
            }
        }
        return true;
    }

    private static ByteBuffer emptyBuffer(int capacity) {
        ByteBuffer b = ByteBuffer.allocate(capacity);
        b.limit(0);
        return b;
    }

    private void closeChannel() throws IOException {
        if (channel != null) {
            channel.close();
            channel = null;
        }
    }

    @Override
    public void close() throws IOException {
        closeChannel();
    }
}
