package ultron.flink.topic;

import org.apache.flink.connector.base.source.reader.RecordsBySplits;
import org.apache.flink.connector.base.source.reader.RecordsWithSplitIds;
import org.apache.flink.connector.base.source.reader.splitreader.SplitReader;
import org.apache.flink.connector.base.source.reader.splitreader.SplitsAddition;
import org.apache.flink.connector.base.source.reader.splitreader.SplitsChange;
import org.apache.flink.connector.base.source.reader.splitreader.SplitsRemoval;

import java.io.IOException;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Reads the partitions assigned to one source subtask (runs in the fetcher thread). Each
 * fetch takes a batch of lines from every partition that has some, in order per partition;
 * when none has anything new it waits up to the poll interval (or until woken up).
 */
final class TopicSplitReader implements SplitReader<TopicRecord, TopicSplit> {
    private static final int BATCH = 4096;

    private final long pollMillis;
    private final Map<String, PartitionCursor> cursors = new LinkedHashMap<>();
    private final Object signal = new Object();
    private boolean woken;

    TopicSplitReader(long pollMillis) {
        this.pollMillis = pollMillis;
    }

    @Override
    public RecordsWithSplitIds<TopicRecord> fetch() throws IOException {
        RecordsBySplits.Builder<TopicRecord> out = new RecordsBySplits.Builder<>();
        boolean progress = false;
        long now = System.nanoTime() / 1_000_000;
        int share = Math.max(256, BATCH / Math.max(1, cursors.size()));
        Iterator<Map.Entry<String, PartitionCursor>> it = cursors.entrySet().iterator();
        while (it.hasNext()) {
            Map.Entry<String, PartitionCursor> entry = it.next();
            PartitionCursor cursor = entry.getValue();
            if (cursor.read(out, share, now) > 0) {
                progress = true;
            }
            if (cursor.isFinished()) {
                out.addFinishedSplit(entry.getKey());
                cursor.close();
                it.remove();
                progress = true;
            }
        }
        if (!progress) {
            pause();
        }
        return out.build();
    }

    private void pause() {
        synchronized (signal) {
            if (!woken) {
                try {
                    signal.wait(pollMillis);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            woken = false;
        }
    }

    @Override
    public void handleSplitsChanges(SplitsChange<TopicSplit> change) {
        if (change instanceof SplitsAddition) {
            for (TopicSplit split : change.splits()) {
                cursors.put(split.splitId(), new PartitionCursor(split, pollMillis));
            }
        } else if (change instanceof SplitsRemoval) {
            for (TopicSplit split : change.splits()) {
                PartitionCursor cursor = cursors.remove(split.splitId());
                if (cursor != null) {
                    try {
                        cursor.close();
                    } catch (IOException ignored) {
                        // closing a read-only channel
                    }
                }
            }
        }
    }

    @Override
    public void wakeUp() {
        synchronized (signal) {
            woken = true;
            signal.notifyAll();
        }
    }

    @Override
    public void close() throws IOException {
        for (PartitionCursor cursor : cursors.values()) {
            cursor.close();
        }
        cursors.clear();
    }
}
