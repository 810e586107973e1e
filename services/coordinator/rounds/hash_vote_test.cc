#include "services/coordinator/rounds/hash_vote.h"

#include "gtest/gtest.h"

namespace dd::coordinator {
namespace {

TEST(HashVote, APeerOutvotedByTwoOrMoreHasDiverged) {
  HashVote vote;
  EXPECT_FALSE(vote.Record("a", 5, "aaaa").diverged);
  EXPECT_FALSE(vote.Record("b", 5, "aaaa").diverged);
  HashVote::Verdict v = vote.Record("c", 5, "cccc");
  EXPECT_TRUE(v.diverged);
  EXPECT_EQ(v.consensus, "aaaa");
  // After downloading the common state it agrees.
  EXPECT_FALSE(vote.Record("c", 5, "aaaa").diverged);
  // Another step is judged on its own.
  EXPECT_FALSE(vote.Record("c", 6, "c6").diverged);
}

TEST(HashVote, APeerOutvotedAfterItReportedLearnsOfItOnItsNextReport) {
  HashVote vote;
  EXPECT_FALSE(vote.Record("c", 3, "bad").diverged);  // first: nobody to compare with
  vote.Record("a", 3, "good");
  vote.Record("b", 3, "good");
  // c's next report names a newer step the others have not reported yet.
  HashVote::Verdict v = vote.Record("c", 4, "bad4");
  EXPECT_TRUE(v.diverged);
  EXPECT_EQ(v.consensus, "good");
  // After downloading a member's state of step 4 it holds the common hash.
  vote.Record("a", 4, "good4");
  vote.Record("b", 4, "good4");
  EXPECT_FALSE(vote.Record("c", 4, "good4").diverged);
  EXPECT_FALSE(vote.Record("c", 5, "c5").diverged);
}

TEST(HashVote, TwoPeersThatDisagreeAreNotJudged) {
  HashVote vote;
  vote.Record("a", 1, "x");
  EXPECT_FALSE(vote.Record("b", 1, "y").diverged);
  // A tie of two against two: nobody can tell either.
  vote.Record("c", 1, "x");
  EXPECT_FALSE(vote.Record("d", 1, "y").diverged);
  // The first peer in a minority learns of it on its next report.
  vote.Record("e", 1, "x");
  EXPECT_TRUE(vote.Record("d", 1, "y").diverged);
}

TEST(HashVote, OnlyTheNewestStepsAreKeptAndForgottenPeersDoNotVote) {
  HashVote vote(/*steps_kept=*/2);
  vote.Record("a", 1, "x");
  vote.Record("b", 1, "x");
  vote.Record("a", 2, "x2");
  vote.Record("a", 3, "x3");  // step 1 is dropped
  EXPECT_FALSE(vote.Record("c", 1, "y").diverged);  // too old to judge
  vote.Record("b", 3, "x3");
  vote.Forget("b");
  EXPECT_FALSE(vote.Record("c", 3, "y3").diverged);  // only "a" agrees on x3 now
}

}  // namespace
}  // namespace dd::coordinator
