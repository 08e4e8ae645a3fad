package ultron.flink.topic;

/** One line of a partition file, and the position just after it. */
final class TopicRecord {
    final byte[] line;
    final String file;
    final long offsetAfter;

    TopicRecord(byte[] line, String file, long offsetAfter) {
        this.line = line;
        this.file = file;
        this.offsetAfter = offsetAfter;
    }
}
