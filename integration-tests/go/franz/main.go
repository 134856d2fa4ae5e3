// A franz-go client for Cutover's tests: produces n records (idempotent,
// acks=all) to a topic, printing each acknowledged record as a JSON line,
// then consumes them in a consumer group (classic protocol), printing each
// consumed record, and commits.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

type line struct {
	Event     string `json:"event"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Value     string `json:"value"`
}

func emit(l line) {
	b, _ := json.Marshal(l)
	fmt.Println(string(b))
}

func main() {
	bootstrap := flag.String("bootstrap", "", "bootstrap servers")
	topic := flag.String("topic", "", "topic")
	n := flag.Int("n", 1000, "records")
	group := flag.String("group", "", "consumer group")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	seeds := strings.Split(*bootstrap, ",")

	producer, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(*topic))
	if err != nil {
		fmt.Fprintln(os.Stderr, "producer:", err)
		os.Exit(1)
	}
	records := make([]*kgo.Record, 0, *n)
	for i := 0; i < *n; i++ {
		records = append(records, &kgo.Record{Key: []byte(fmt.Sprintf("k%d", i%29)), Value: []byte(fmt.Sprintf("franz-%d", i))})
	}
	for _, r := range producer.ProduceSync(ctx, records...) {
		if r.Err != nil {
			fmt.Fprintln(os.Stderr, "produce:", r.Err)
			os.Exit(1)
		}
		emit(line{"acked", r.Record.Partition, r.Record.Offset, string(r.Record.Value)})
	}
	producer.Close()

	consumer, err := kgo.NewClient(
		kgo.SeedBrokers(seeds...),
		kgo.ConsumeTopics(*topic),
		kgo.ConsumerGroup(*group),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
	got := 0
	for got < *n {
		fetches := consumer.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			fmt.Fprintln(os.Stderr, "consumed", got, "of", *n, ":", err)
			os.Exit(1)
		}
		for _, e := range fetches.Errors() {
			fmt.Fprintln(os.Stderr, "fetch error:", e.Topic, e.Partition, e.Err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			got++
			emit(line{"consumed", r.Partition, r.Offset, string(r.Value)})
		})
	}
	if err := consumer.CommitUncommittedOffsets(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "commit:", err)
		os.Exit(1)
	}
	consumer.Close()
}
